"""Episode evaluation on many processes: a local worker pool (default) or a Ray cluster (optional extra).

Both run the same jobs (:func:`_play`, on workers set up by :func:`_init_worker`): one episode of a real
(non-batched) env with one candidate's parameters and one seed, the env built once per worker process and
reused. Episodes follow the seeding rule of :func:`dreamgym.episodes.episode_seeds`, so every backend scores a
generation identically.

Fault tolerance: a worker that dies (segfault, OOM kill) or takes longer than ``timeout`` seconds on one
episode is killed and replaced, and its episode is retried, at most ``max_retries`` times per episode,
after which a RuntimeError names the seed (on Ray, Ray itself retries the episodes of dead workers and
nodes: :mod:`dreamgym.ray_pool`). A Python exception inside an episode is a bug, not bad luck: it is
raised at once with the worker's traceback. A generation therefore either finishes or fails; it
never waits forever. With ``progress`` (a label) each call shows a bar of finished episodes, for long
evaluations such as 100 real CarRacing episodes.
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from dreamgym.controller import ControllerConfig
from dreamgym.devices import resolve_device
from dreamgym.episodes import Scores, episode_seeds
from dreamgym.processes import WorkerPool, on_worker_exit
from dreamgym.ray_pool import RayPool

from .rollout import env_kwargs_for, make_env, score_episode

_ENVS: dict[str, gym.Env] = {}
_TASK: tuple[str, dict[str, Any], ControllerConfig] | None = None


def _cached_env(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    """The env of this worker process for (env_id, env_kwargs), built on first use."""
    key = json.dumps([env_id, env_kwargs], sort_keys=True, default=str)
    if key not in _ENVS:
        _ENVS[key] = make_env(env_id, env_kwargs)
    return _ENVS[key]


def run_episode(
    env_id: str, env_kwargs: dict[str, Any], config: ControllerConfig, params: np.ndarray, seed: int
) -> tuple[float, int]:
    """The task every backend runs: (return, length) of one episode of ``params`` (n,) from ``seed``."""
    return score_episode(_cached_env(env_id, env_kwargs), config, params, seed)


def _close_envs() -> None:
    for env in _ENVS.values():
        env.close()
    _ENVS.clear()


def _init_worker(env_id: str, env_kwargs: dict[str, Any], config: ControllerConfig) -> None:
    """A pool worker: one torch thread, its env built before it says ready, closed when it exits."""
    global _TASK
    torch.set_num_threads(1)
    on_worker_exit(_close_envs)
    _cached_env(env_id, env_kwargs)
    _TASK = (env_id, env_kwargs, config)


def _play(job: tuple[np.ndarray, int]) -> tuple[float, int]:
    """A pool job: one episode of (params, seed) on this worker's env."""
    assert _TASK is not None
    return run_episode(*_TASK, *job)


def _scores(results: dict[int, tuple[float, int]], seeds: np.ndarray, candidates: int, episodes: int) -> Scores:
    shape = (candidates, episodes)
    returns = np.array([results[k][0] for k in range(len(seeds))], np.float64).reshape(shape)
    lengths = np.array([results[k][1] for k in range(len(seeds))], np.int64).reshape(shape)
    return Scores(returns, lengths, seeds.reshape(shape))


def _describe(job: tuple[np.ndarray, int]) -> str:
    return f"episode with seed {job[1]}"


class _JobEvaluator:
    """Scores candidates episode by episode, one :func:`_play` job each, on ``self._pool``."""

    _pool: WorkerPool[tuple[np.ndarray, int], tuple[float, int]] | RayPool[tuple[np.ndarray, int], tuple[float, int]]
    progress: str | None

    @property
    def replaced(self) -> int:
        """How many workers were replaced (pool) or episodes resubmitted (Ray) after a crash or hang."""
        return self._pool.replaced

    def evaluate(self, params: np.ndarray, episodes: int, seed: int) -> Scores:
        params = np.asarray(params, np.float32)
        seeds = episode_seeds(seed, len(params), episodes).reshape(-1)
        jobs = [(params[k // episodes], int(s)) for k, s in enumerate(seeds)]
        results: dict[int, tuple[float, int]] = {}
        with tqdm(total=len(seeds), desc=self.progress, unit="episode", disable=self.progress is None) as bar:
            for k, result in self._pool.run(jobs):
                results[k] = result
                bar.update()
        return _scores(results, seeds, len(params), episodes)

    def close(self) -> None:
        self._pool.close()


class PoolEvaluator(_JobEvaluator):
    """Scores candidates episode by episode on a :class:`dreamgym.processes.WorkerPool` of ``workers`` local
    processes (spawned, one env each, kept from one call to the next)."""

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        config: ControllerConfig,
        workers: int = 2,
        timeout: float = 600.0,
        max_retries: int = 3,
        startup_timeout: float = 600.0,
        device: str | torch.device = "cpu",
        progress: str | None = None,
    ) -> None:
        self.args = (env_id, env_kwargs_for(env_id, env_kwargs, resolve_device(device)), config)
        self.progress = progress
        self._pool = WorkerPool(_play, workers, _init_worker, self.args, timeout, max_retries, startup_timeout,
                                describe=_describe)  # fmt: skip


class RayEvaluator(_JobEvaluator):
    """Scores candidates episode by episode as Ray tasks (:class:`dreamgym.ray_pool.RayPool`; ``address``:
    ``auto``, ``HOST:PORT``, or None to start a local Ray runtime unless ``RAY_ADDRESS`` is set): the same
    jobs as :class:`PoolEvaluator`; an episode whose worker or node dies is retried by Ray."""

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        config: ControllerConfig,
        address: str | None = None,
        timeout: float = 600.0,
        max_retries: int = 3,
        device: str | torch.device = "cpu",
        progress: str | None = None,
    ) -> None:
        self.args = (env_id, env_kwargs_for(env_id, env_kwargs, resolve_device(device)), config)
        self.progress = progress
        self._pool = RayPool(_play, address, _init_worker, self.args, timeout, max_retries, describe=_describe)
