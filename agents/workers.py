"""Episode evaluation on many processes: a local worker pool (default) or a Ray cluster (optional extra).

Both run the same task, :func:`run_episode`: one episode of a real (non-batched) env with one candidate's
parameters and one seed, the env built once per worker process and reused. Episodes follow the seeding
rule of :func:`agents.rollout.episode_seeds`, so every backend scores a generation identically.

Fault tolerance: a worker that dies (segfault, OOM kill) or takes longer than ``timeout`` seconds on one
episode is killed and replaced, and its episode is retried, at most ``max_retries`` times per episode,
after which a RuntimeError names the seed. A Python exception inside an episode is a bug, not bad luck:
it is raised at once with the worker's traceback. A generation therefore either finishes or fails; it
never waits forever. With ``progress`` (a label) each call shows a bar of finished episodes, for long
evaluations such as 100 real CarRacing episodes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from agents.rollout import Scores, env_kwargs_for, episode_seeds, make_env, play_episode
from dreamgym.controller import ControllerConfig
from dreamgym.devices import resolve_device
from dreamgym.processes import WorkerPool, on_worker_exit

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
    return play_episode(_cached_env(env_id, env_kwargs), config, params, seed)


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


def _count_failure(failures: np.ndarray, k: int, seeds: np.ndarray, why: str, max_retries: int) -> None:
    """Counts a lost attempt at episode k; raises once it has failed more than ``max_retries`` times."""
    failures[k] += 1
    if failures[k] > max_retries:
        raise RuntimeError(f"episode with seed {seeds[k]} failed {failures[k]} times ({why}); giving up")


def _scores(results: dict[int, tuple[float, int]], seeds: np.ndarray, candidates: int, episodes: int) -> Scores:
    shape = (candidates, episodes)
    returns = np.array([results[k][0] for k in range(len(seeds))], np.float64).reshape(shape)
    lengths = np.array([results[k][1] for k in range(len(seeds))], np.int64).reshape(shape)
    return Scores(returns, lengths, seeds.reshape(shape))


class PoolEvaluator:
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
        self._pool: WorkerPool[tuple[np.ndarray, int], tuple[float, int]] = WorkerPool(
            _play, workers, _init_worker, self.args, timeout, max_retries, startup_timeout,
            describe=lambda job: f"episode with seed {job[1]}",
        )  # fmt: skip

    @property
    def replaced(self) -> int:
        """How many workers were replaced after a crash or hang."""
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


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ImportError("the Ray backend needs the 'ray' extra: pip install 'dreamgym[ray]'") from err
    return ray


class RayEvaluator:
    """Scores candidates episode by episode as Ray tasks (``address``: ``auto``, ``HOST:PORT``, or None to
    start a local Ray runtime unless ``RAY_ADDRESS`` is set).

    Same task function and retry rule as :class:`PoolEvaluator`: a task lost with its worker is resubmitted;
    if no task finishes within ``timeout`` seconds, the unfinished ones are cancelled and resubmitted.
    """

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
        self.ray = _import_ray()
        if not self.ray.is_initialized():
            # ship this package's code to the cluster's workers; dreamgym itself must be installed there
            self.ray.init(
                address=address, log_to_driver=False, runtime_env={"py_modules": [str(Path(__file__).parent)]}
            )
        self.args = (env_id, env_kwargs_for(env_id, env_kwargs, resolve_device(device)), config)
        self.timeout, self.max_retries, self.progress = timeout, max_retries, progress
        self._task = self.ray.remote(max_retries=0)(run_episode)

    def evaluate(self, params: np.ndarray, episodes: int, seed: int) -> Scores:
        ray = self.ray
        params = np.asarray(params, np.float32)
        seeds = episode_seeds(seed, len(params), episodes).reshape(-1)
        failures = np.zeros(len(seeds), np.int64)
        results: dict[int, tuple[float, int]] = {}

        def submit(k: int) -> Any:
            return self._task.remote(*self.args, params[k // episodes], int(seeds[k]))

        refs = {submit(k): k for k in range(len(seeds))}
        bar = tqdm(total=len(seeds), desc=self.progress, unit="episode", disable=self.progress is None)
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=self.timeout)
            retry: list[tuple[int, str]] = []
            for ref in ready:
                k = refs.pop(ref)
                if not self._collect(ref, k, results):
                    retry.append((k, "Ray worker lost"))
            if not ready:  # nothing finished in time: the unfinished tasks count as hung
                for ref, k in refs.items():
                    ray.cancel(ref, force=True)
                    retry.append((k, f"no result after {self.timeout:g} s"))
                refs.clear()
            for k, why in retry:
                _count_failure(failures, k, seeds, why, self.max_retries)
                refs[submit(k)] = k
            bar.update(len(results) - bar.n)
        bar.close()
        return _scores(results, seeds, len(params), episodes)

    def _collect(self, ref: Any, k: int, results: dict[int, tuple[float, int]]) -> bool:
        """Stores a finished task's result; False when its worker was lost (to be retried)."""
        try:
            results[k] = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as err:  # a Python exception inside the episode
            raise RuntimeError(f"episode task failed: {err}") from err
        except self.ray.exceptions.RayError:  # worker or node lost
            return False
        return True

    def close(self) -> None:
        """Leaves the Ray runtime running (it may be shared); ``ray.shutdown()`` ends a local one."""
