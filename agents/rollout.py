"""Scoring controllers: whole populations in one batched VectorEnv, or single episodes in a real env.

Every evaluation backend follows one seeding rule, so they give the same episodes: candidate p's episode
e is env ``k = p * E + e`` and is reset with seed ``seed + k`` (the rule Gymnasium's vector envs apply to
``reset(seed=seed)``). :class:`VectorEvaluator` runs a generation of P·E episodes as one VectorEnv of P·E
envs (a natively batched dream env for dreamgym Dream ids, which stops computing the envs whose episode
has ended, a ``SyncVectorEnv`` for any other Gymnasium id), computing every action with one einsum;
:func:`score_episode` is the one-env episode the worker pools run (see :mod:`agents.workers`). dreamgym ids
are registered by ``import dreamgym``, which importing this package does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from dreamgym.controller import ControllerConfig, population_actions
from dreamgym.devices import resolve_device
from dreamgym.envs import DreamVectorEnv
from dreamgym.episodes import play_episode


def derive_seed(*keys: int) -> int:
    """A seed in [0, 2**31) from integer keys such as (run seed, generation, stream); ``+ k`` stays < 2**32."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint32)[0]) % 2**31


def is_dreamgym(env_id: str) -> bool:
    """A dreamgym id, also behind Gymnasium's ``module:`` prefix (a game of your own: ``mymodule:dreamgym/...``)."""
    return env_id.rpartition(":")[2].startswith("dreamgym/")


def is_dream(env_id: str) -> bool:
    """Dream ids have a natively batched VectorEnv; other dreamgym ids wrap one real game each."""
    return is_dreamgym(env_id) and "Dream-v" in env_id


def env_kwargs_for(env_id: str, kwargs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Keyword arguments for making ``env_id``: dreamgym envs also get the ``device``."""
    return {**kwargs, "device": str(device)} if is_dreamgym(env_id) else dict(kwargs)


def make_env(env_id: str, env_kwargs: dict[str, Any], **make_kwargs: Any) -> gym.Env:
    """One env, e.g. for a worker process or for recording a GIF (``render_mode="rgb_array"``)."""
    return gym.make(env_id, **env_kwargs, **make_kwargs)


def make_vector_env(env_id: str, num_envs: int, env_kwargs: dict[str, Any]) -> gym.vector.VectorEnv:
    """``num_envs`` envs in one VectorEnv: the dream's own batched env, or a SyncVectorEnv otherwise."""
    if is_dreamgym(env_id):
        return gym.make_vec(env_id, num_envs=num_envs, **env_kwargs)
    # "sync", not a native vector env such as CartPoleVectorEnv: only SyncVectorEnv seeds env k with seed + k
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", **env_kwargs)


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@dataclass(frozen=True)
class Scores:
    """Outcome of P candidates × E episodes: returns (P, E) float64, lengths (P, E) int64, seeds (P, E)."""

    returns: np.ndarray
    lengths: np.ndarray
    seeds: np.ndarray


def episode_seeds(seed: int, candidates: int, episodes: int) -> np.ndarray:
    """(P, E) seeds: episode e of candidate p is env k = p·E + e, seeded ``seed + k``."""
    return seed + np.arange(candidates * episodes, dtype=np.int64).reshape(candidates, episodes)


COMPACT_ABOVE = 8
"""a dream VectorEnv of more envs than this drops its finished envs once they are a quarter of it"""


def rollout_population(envs: gym.vector.VectorEnv, config: ControllerConfig, params: torch.Tensor, episodes: int,
                       seed: int, compact_above: int | None = COMPACT_ABOVE) -> Scores:  # fmt: skip
    """Plays every env of ``envs`` (P·E of them) to the end of its first episode.

    Env k acts with candidate ``k // E`` (params (P, n) on the policy's device). With Gymnasium's
    NEXT_STEP autoreset the step after an episode's end is a reset step, so rewards are counted only until
    an env is first done; the loop stops as soon as every env has finished one episode.

    Episode lengths are uneven (the longest is often several times the mean), so a :class:`DreamVectorEnv`
    stops computing the envs that have finished: whenever a quarter of its envs have finished and it has
    more than ``compact_above`` envs, it is replaced by its :meth:`~DreamVectorEnv.subset` of playing envs,
    which continue exactly as they would have. The env-steps computed then stay within 4/3 x (the steps
    played) + ``compact_above`` x (the longest episode); a subset costs less than a step of its batch.
    ``compact_above=None`` never compacts; any other VectorEnv is always stepped whole.
    """
    P, n = len(params), envs.num_envs
    if n != P * episodes:
        raise ValueError(f"vector env has {n} envs, expected {P} candidates x {episodes} episodes")
    compact = compact_above is not None and isinstance(envs, DreamVectorEnv)
    obs, _ = envs.reset(seed=seed)
    returns = np.zeros(n, np.float64)
    lengths = np.zeros(n, np.int64)
    done = np.zeros(n, bool)
    rows = np.arange(n)  # env i of ``envs`` is env rows[i] of the population
    actors, per_actor = params, episodes  # env i of ``envs`` acts with actors[i // per_actor]
    while not done.all():
        actions = population_actions(config, actors, obs, per_actor)
        obs, reward, terminated, truncated, _ = envs.step(actions)
        playing = ~done[rows]
        returns[rows] += np.where(playing, _numpy(reward), 0.0)
        lengths[rows] += playing
        done[rows] |= _numpy(terminated).astype(bool) | _numpy(truncated).astype(bool)
        keep = np.flatnonzero(~done[rows])
        if compact and len(rows) > compact_above and 0 < 4 * len(keep) <= 3 * len(rows):
            envs, obs, rows = envs.subset(keep), _take_rows(obs, keep), rows[keep]
            actors, per_actor = params[torch.as_tensor(rows // episodes, device=params.device)], 1
    return Scores(returns.reshape(P, episodes), lengths.reshape(P, episodes), episode_seeds(seed, P, episodes))


def _take_rows(batch: Any, index: np.ndarray) -> Any:
    """Rows ``index`` of a numpy array or a torch tensor."""
    return batch[torch.as_tensor(index, device=batch.device)] if isinstance(batch, torch.Tensor) else batch[index]


def score_episode(env: gym.Env, config: ControllerConfig, params: np.ndarray, seed: int,
                  on_frame: Callable[[np.ndarray], None] | None = None) -> tuple[float, int]:  # fmt: skip
    """One episode of ``env`` from ``seed`` with flat ``params`` (n,); returns (return, length).

    ``on_frame`` receives ``env.render()`` after the reset and after every step (for GIFs).
    """
    flat = torch.as_tensor(np.asarray(params, np.float32))[None]

    def act(obs: Any) -> Any:
        return population_actions(config, flat, np.asarray(obs)[None], 1)[0]

    render = None if on_frame is None else (lambda *_: on_frame(env.render()))
    result = play_episode(env, act, seed, on_step=render, on_reset=render)
    return result.total_reward, result.steps


class Evaluator(Protocol):
    """Scores P candidates (P, n) on E episodes each, seeded by :func:`episode_seeds`."""

    def evaluate(self, params: np.ndarray, episodes: int, seed: int) -> Scores: ...

    def close(self) -> None: ...


class VectorEvaluator:
    """Batched backend: one VectorEnv of P·E envs per evaluation size, kept open between generations.

    A dream VectorEnv is asked for torch outputs (``return_tensors``), so observations stay on ``device``.
    """

    def __init__(
        self, env_id: str, env_kwargs: dict[str, Any], config: ControllerConfig, device: str | torch.device = "cpu"
    ) -> None:
        self.env_id, self.config = env_id, config
        self.device = resolve_device(device)
        self.env_kwargs = env_kwargs_for(env_id, env_kwargs, self.device)
        if is_dream(env_id):
            self.env_kwargs.setdefault("return_tensors", True)
        self._envs: dict[int, gym.vector.VectorEnv] = {}

    def _vector_env(self, num_envs: int) -> gym.vector.VectorEnv:
        if num_envs not in self._envs:
            envs = make_vector_env(self.env_id, num_envs, self.env_kwargs)
            self.config.check_env(envs)
            self._envs[num_envs] = envs
        return self._envs[num_envs]

    def evaluate(self, params: np.ndarray, episodes: int, seed: int) -> Scores:
        params_t = torch.as_tensor(np.asarray(params), dtype=torch.float32, device=self.device)
        with torch.no_grad():
            return rollout_population(self._vector_env(len(params) * episodes), self.config, params_t, episodes, seed)

    def close(self) -> None:
        for envs in self._envs.values():
            envs.close()
        self._envs.clear()
