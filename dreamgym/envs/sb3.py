"""Stable-Baselines3 over the batched dream: the DreamVectorEnv presented as an SB3 ``VecEnv``.

SB3 cannot consume a Gymnasium VectorEnv, and wrapping N single dreams in a ``DummyVecEnv`` would step
them one by one. The adapter keeps the one batched step and translates the API: ``dones = terminated |
truncated``, ``infos[i]["terminal_observation"]`` from the dream's SAME_STEP ``final_obs``, and
``infos[i]["TimeLimit.truncated"]`` as SB3 expects it (truncated and not terminated).
:func:`make_sb3_vec_env` wraps it in SB3's ``VecMonitor`` by default, so ``ep_rew_mean`` and
``ep_len_mean`` show in SB3's logs as they do for any env SB3 makes itself.

Example:
    >>> from stable_baselines3 import PPO
    >>> envs = make_sb3_vec_env("dreamgym/TakeCoverDream-v0", 16, world_model="takecover")  # doctest: +SKIP
    >>> PPO("MlpPolicy", envs).learn(100_000)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from dreamgym.envs.dream_vector import DreamVectorEnv


class DreamVecEnvAdapter(VecEnv):
    """An SB3 ``VecEnv`` over a :class:`DreamVectorEnv` made with ``autoreset_mode=SAME_STEP`` (numpy outputs).

    The N dreams live in one batched object, so attributes and methods are answered once for all envs:
    ``get_attr`` gives env i the i-th entry of a per-env array (e.g. ``temperature``) and the shared value
    otherwise; ``set_attr`` on a subset of envs works for per-env arrays only.
    """

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        """``venv``: a :class:`DreamVectorEnv` (any other VectorEnv is a TypeError)."""
        if not isinstance(venv, DreamVectorEnv):
            raise TypeError(f"expected a DreamVectorEnv, got {type(venv).__name__}")
        if venv.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                "SB3 needs the dream made with autoreset_mode=AutoresetMode.SAME_STEP (see make_sb3_vec_env)"
            )
        if venv.return_tensors:
            raise ValueError("SB3 needs numpy outputs: make the dream with return_tensors=False")
        self.venv = venv
        self._actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    def reset(self) -> VecEnvObs:
        """Resets every dream, with the seeds of the last ``seed()`` call if there was one."""
        seeds = None if all(s is None for s in self._seeds) else self._seeds
        obs, _ = self.venv.reset(seed=seeds)
        self.reset_infos = [{} for _ in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() without a pending step_async()")
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{"TimeLimit.truncated": bool(t)} for t in truncated & ~terminated]
        for i in np.flatnonzero(dones):
            infos[i]["terminal_observation"] = info["final_obs"][i]
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def _split(self, value: Any, indices: VecEnvIndices) -> list[Any]:
        """Per-env entries of an (N, ...) array, or the shared value repeated, for ``indices``."""
        per_env = isinstance(value, np.ndarray) and value.ndim > 0 and len(value) == self.num_envs
        return [value[i] if per_env else value for i in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._split(getattr(self.venv, attr_name), indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        chosen = list(self._get_indices(indices))
        if sorted(chosen) == list(range(self.num_envs)):
            setattr(self.venv, attr_name, value)
            return
        current = getattr(self.venv, attr_name)
        if not (isinstance(current, np.ndarray) and current.ndim > 0 and len(current) == self.num_envs):
            raise ValueError(f"{attr_name!r} is shared by all dreams; it can only be set for all envs at once")
        current = current.copy()
        current[chosen] = value
        setattr(self.venv, attr_name, current)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:  # fmt: skip
        """Calls the method once on the batched dream; per-env results are split as in ``get_attr``."""
        return self._split(getattr(self.venv, method_name)(*method_args, **method_kwargs), indices)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.venv.render()
        return [None] * self.num_envs if frames is None else list(frames)


def make_sb3_vec_env(env_id: str, num_envs: int, monitor: bool = True, **kwargs: Any) -> VecEnv:
    """``gymnasium.make_vec(env_id, num_envs, autoreset_mode=SAME_STEP, **kwargs)`` as an SB3 VecEnv.

    ``monitor``: wrap it in ``VecMonitor`` (episode returns and lengths in ``infos[i]["episode"]`` and SB3's
    logs); pass False to get the bare :class:`DreamVecEnvAdapter`.
    """
    venv = gym.make_vec(env_id, num_envs=num_envs, autoreset_mode=AutoresetMode.SAME_STEP, **kwargs)
    adapter = DreamVecEnvAdapter(venv)
    return VecMonitor(adapter) if monitor else adapter
