"""Scoring controllers: whole populations in one batched VectorEnv, or single episodes in a real env.

Every evaluation backend follows one seeding rule, so they give the same episodes: candidate p's episode
e is env ``k = p * E + e`` and is reset with seed ``seed + k`` (the rule Gymnasium's vector envs apply to
``reset(seed=seed)``). :class:`VectorEvaluator` runs a generation of P·E episodes as one VectorEnv of P·E
envs (a natively batched dream env for dreamgym Dream ids, which stops computing the envs whose episode
has ended, a ``SyncVectorEnv`` for any other Gymnasium id) through :func:`dreamgym.episodes.rollout_population`,
or, for dreamgym Latent ids, on a latent VectorEnv of a few real games through
:func:`dreamgym.episodes.rollout_queue`;
:func:`score_episode` is the one-env episode the worker pools run (see :mod:`agents.workers`). dreamgym ids
are registered by ``import dreamgym``, which importing this package does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from dreamgym.controller import ControllerConfig, population_actions
from dreamgym.devices import resolve_device
from dreamgym.episodes import Scores, play_episode, rollout_population, rollout_queue


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
    A dreamgym Latent id (real games) gets one latent VectorEnv of ``num_envs`` games instead (one worker
    process each, autoreset disabled), whose games take the P·E episodes in turn (:func:`rollout_queue`).
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], config: ControllerConfig,
                 device: str | torch.device = "cpu", num_envs: int = 2) -> None:  # fmt: skip
        self.env_id, self.config = env_id, config
        self.device = resolve_device(device)
        self.env_kwargs = env_kwargs_for(env_id, env_kwargs, self.device)
        if is_dream(env_id):
            self.env_kwargs.setdefault("return_tensors", True)
        self.queue_envs = num_envs if is_dreamgym(env_id) and not is_dream(env_id) else None
        if self.queue_envs is not None:
            self.env_kwargs["autoreset_mode"] = gym.vector.AutoresetMode.DISABLED
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
            if self.queue_envs is not None:
                return rollout_queue(self._vector_env(self.queue_envs), self.config, params_t, episodes, seed)
            return rollout_population(self._vector_env(len(params) * episodes), self.config, params_t, episodes, seed)

    def close(self) -> None:
        for envs in self._envs.values():
            envs.close()
        self._envs.clear()
