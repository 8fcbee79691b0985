"""One CMA-ES generation (P candidates x E episodes) in the dream against the same generation in the real game.

Both score the same candidates, those of a first generation (x0 = 0, sigma0 = 0.1), with the same
controller on the same observations [z, h]:

- dream: :class:`~agents.rollout.VectorEvaluator`, one DreamVectorEnv of P·E envs stepped until every
  episode has ended (the whole generation is timed, its longest episode included);
- real: :class:`~agents.workers.PoolEvaluator` on ``dreamgym/<Game>Latent-v0`` (the real game seen through
  the world model) with W worker processes. Starting the workers is not timed; then a sample of episodes
  is timed and the generation's time extrapolated as (sample time / sample episodes) x P·E.

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
from dreamgym.world_model import WorldModel


@dataclass(frozen=True)
class GenerationSizes:
    popsize: int
    episodes: int
    real_seconds: float
    """time the real-game sample for about this long (at least one episode per worker)"""


def real_generation_seconds(game: str, bundle: Path, config: ControllerConfig, params: np.ndarray, episodes: int,
                            workers: int, seconds: float) -> tuple[float, int, float]:  # fmt: skip
    """(extrapolated seconds for all P·E real episodes, episodes sampled, their mean length)."""
    pool = PoolEvaluator(latent_id(game), {"world_model": str(bundle)}, config, workers=workers)
    try:
        start = time.perf_counter()
        pool.evaluate(params[:workers], 1, seed=0)  # starts the workers; not timed
        per_episode = (time.perf_counter() - start) / workers
        count = int(min(len(params) * episodes, max(workers, round(seconds / per_episode * workers))))
        candidates = params[np.arange(count) % len(params)]
        start = time.perf_counter()
        scores = pool.evaluate(candidates, 1, seed=1)
        elapsed = time.perf_counter() - start
    finally:
        pool.close()
    return elapsed / count * len(params) * episodes, count, float(scores.lengths.mean())


def run(world_model: str | None, game: str, sizes: GenerationSizes, workers: int, device: torch.device) -> list[Row]:
    """Times both generations with the bundle at ``world_model``, or a random one (None)."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(world_model) if world_model is not None else Path(tmp) / "bundle"
        if world_model is None:
            random_world_model(game, 300, torch.device("cpu")).save(bundle)
        config = ControllerConfig.for_env(DreamEnv(bundle, game=game), dream_id(game))
        params = np.random.default_rng(0).normal(0.0, 0.1, size=(sizes.popsize, config.n_params))
        real_s, sampled, mean_length = real_generation_seconds(
            game, bundle, config, params, sizes.episodes, workers, sizes.real_seconds
        )
        given = world_model is not None
        dream_model = WorldModel.load(bundle, device) if given else random_world_model(game, mean_length, device)
    evaluator = VectorEvaluator(dream_id(game), {"world_model": dream_model}, config, device)
    try:
        start = time.perf_counter()
        scores = evaluator.evaluate(params, sizes.episodes, seed=2)
        dream_s = time.perf_counter() - start
    finally:
        evaluator.close()
    total = sizes.popsize * sizes.episodes
    note = (f"real: {workers} pool workers, extrapolated from {sampled} episodes (mean length {mean_length:.0f}) "
            f"to {total} = {real_s:.0f} s; dream: whole generation on {device} in {dream_s:.1f} s (mean length "
            f"{scores.lengths.mean():.0f}, longest {scores.lengths.max()})")  # fmt: skip
    return [
        Row(f"cmaes_{game}", f"one generation, {sizes.popsize} x {sizes.episodes} episodes", 3600 / dream_s,
            "generations/h", f"real game, {workers}-process pool", 3600 / real_s, real_s / dream_s, None, note)
    ]  # fmt: skip
