"""One CMA-ES generation (P candidates x E episodes) in the dream against the same generation in the real game.

Both score the same candidates, those of a first generation (x0 = 0, sigma0 = 0.1), with the same
controller on the same observations [z, h]:

- dream: :class:`~agents.rollout.VectorEvaluator`, one DreamVectorEnv of P·E envs stepped until every
  episode has ended (the whole generation is timed, its longest episode included);
- real: :class:`~agents.workers.PoolEvaluator` on ``dreamgym/<Game>Latent-v0`` (the real game seen through
  the world model) with W worker processes. Starting the workers is not timed; then a sample of episodes
  is timed and the generation's time extrapolated as (sample time / sample episodes) x P·E.

A second row plays the same sampled real episodes (same candidates and seeds) on ``--backend vector``: one latent
VectorEnv of W games, V, M and the controllers batched in the benchmark's process
(:func:`~dreamgym.episodes.rollout_queue`), against the pool's time; its note says whether the returns agree.

A random world model's dream is made to end its episodes as often as the sampled real ones (mean length);
a trained bundle (``--world-model``) keeps its own.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from agents.rollout import VectorEvaluator
from agents.workers import PoolEvaluator
from benchmarks.timing import Row, random_world_model
from dreamgym.controller import ControllerConfig
from dreamgym.envs import DreamEnv, dream_id, latent_id
from dreamgym.episodes import Scores
from dreamgym.world_model import WorldModel


@dataclass(frozen=True)
class GenerationSizes:
    popsize: int
    episodes: int
    real_seconds: float
    """time the real-game sample for about this long (at least one episode per worker)"""


@dataclass(frozen=True)
class RealSample:
    """Real episodes timed on one backend: the candidates that played them (one episode each, seeds 1, 2, ...),
    the seconds they took and their scores."""

    candidates: np.ndarray
    seconds: float
    scores: Scores


def real_sample(game: str, bundle: Path, config: ControllerConfig, params: np.ndarray, episodes: int, workers: int,
                seconds: float) -> RealSample:  # fmt: skip
    """About ``seconds`` of real episodes of the pool backend (at least one per worker, at most P·E)."""
    pool = PoolEvaluator(latent_id(game), {"world_model": str(bundle)}, config, workers=workers)
    try:
        start = time.perf_counter()
        pool.evaluate(params[:workers], 1, seed=0)  # starts the workers; not timed
        per_episode = (time.perf_counter() - start) / workers
        count = int(min(len(params) * episodes, max(workers, round(seconds / per_episode * workers))))
        candidates = params[np.arange(count) % len(params)]
        start = time.perf_counter()
        scores = pool.evaluate(candidates, 1, seed=1)
        return RealSample(candidates, time.perf_counter() - start, scores)
    finally:
        pool.close()


def vector_sample(game: str, bundle: Path, config: ControllerConfig, pooled: RealSample, workers: int,
                  device: torch.device) -> RealSample:  # fmt: skip
    """The pool's sample of real episodes replayed on one latent VectorEnv of ``workers`` games (starting the
    games is not timed)."""
    evaluator = VectorEvaluator(latent_id(game), {"world_model": str(bundle)}, config, device, num_envs=workers)
    try:
        evaluator.evaluate(pooled.candidates[:1], 1, seed=0)  # starts the games; not timed
        start = time.perf_counter()
        scores = evaluator.evaluate(pooled.candidates, 1, seed=1)
        return RealSample(pooled.candidates, time.perf_counter() - start, scores)
    finally:
        evaluator.close()


def run(world_model: str | None, game: str, sizes: GenerationSizes, workers: int, device: torch.device) -> list[Row]:
    """Times both generations with the bundle at ``world_model``, or a random one (None)."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(world_model) if world_model is not None else Path(tmp) / "bundle"
        if world_model is None:
            random_world_model(game, 300, torch.device("cpu")).save(bundle)
        config = ControllerConfig.for_env(DreamEnv(bundle, game=game), dream_id(game))
        params = np.random.default_rng(0).normal(0.0, 0.1, size=(sizes.popsize, config.n_params))
        pooled = real_sample(game, bundle, config, params, sizes.episodes, workers, sizes.real_seconds)
        vector = vector_sample(game, bundle, config, pooled, workers, device)
        mean_length = float(pooled.scores.lengths.mean())
        given = world_model is not None
        dream_model = WorldModel.load(bundle, device) if given else random_world_model(game, mean_length, device)
    evaluator = VectorEvaluator(dream_id(game), {"world_model": dream_model}, config, device)
    try:
        start = time.perf_counter()
        scores = evaluator.evaluate(params, sizes.episodes, seed=2)
        dream_s = time.perf_counter() - start
    finally:
        evaluator.close()
    total, sampled = sizes.popsize * sizes.episodes, len(pooled.candidates)
    real_s = pooled.seconds / sampled * total
    note = (f"real: {workers} pool workers, extrapolated from {sampled} episodes (mean length {mean_length:.0f}) "
            f"to {total} = {real_s:.0f} s; dream: whole generation on {device} in {dream_s:.1f} s (mean length "
            f"{scores.lengths.mean():.0f}, longest {scores.lengths.max()})")  # fmt: skip
    same = np.array_equal(vector.scores.returns, pooled.scores.returns)
    vector_note = (f"the pool's {sampled} real episodes (mean length {mean_length:.0f}) on one latent VectorEnv of "
                   f"{workers} games (V encoding in the {'workers' if device.type == 'cpu' else 'main process'}, "
                   f"M and controllers batched on {device}): {vector.seconds:.1f} s against "
                   f"{pooled.seconds:.1f} s; returns {'equal' if same else 'NOT equal'} to the pool's")  # fmt: skip
    return [
        Row(f"cmaes_{game}", f"one generation, {sizes.popsize} x {sizes.episodes} episodes", 3600 / dream_s,
            "generations/h", f"real game, {workers}-process pool", 3600 / real_s, real_s / dream_s, None, note),
        Row(f"cmaes_{game}", f"real episodes, latent VectorEnv of {workers} games", sampled / vector.seconds,
            "episodes/s", f"{workers}-process pool", sampled / pooled.seconds, pooled.seconds / vector.seconds, None,
            vector_note),
    ]  # fmt: skip
