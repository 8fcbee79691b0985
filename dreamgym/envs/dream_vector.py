"""N dreams stepped by one batched torch call: a natively batched ``gymnasium.vector.VectorEnv``.

Every env follows the rules of :mod:`dreamgym.envs.dream` (it shares :class:`DreamCore` with the single
env), so env i of a vector env reset with ``seed=s`` plays the episodes of ``DreamEnv`` reset with
``seed=s + i`` given the same actions. ``step`` has no per-env Python loop: validation, M, sampling, done,
truncation and autoreset are tensor operations on the chosen device.
"""

from __future__ import annotations

import copy
import numbers
import os
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dreamgym.devices import resolve_device
from dreamgym.envs.dream import (
    ActionChecker,
    DoneMode,
    DreamCore,
    ObsMode,
    check_render_mode,
    load_world_model,
    observation_space,
)  # fmt: skip
from dreamgym.envs.rng import Seeds, spread_seeds
from dreamgym.games import GAME_KEY
from dreamgym.world_model import WorldModel

ACTION_CHECK_EVERY = 64
"""with ``sync_free`` and ``return_tensors``, the most steps after which an invalid tensor action raises"""


def _env_indices(indices: Any, num_envs: int, device: torch.device) -> torch.Tensor:
    """Distinct indices of envs (a 1-D sequence, array or tensor of integers in [0, N)) -> int64 (B,) on ``device``."""
    x = indices.detach().cpu() if isinstance(indices, torch.Tensor) else torch.as_tensor(np.asarray(indices))
    if x.dim() != 1 or len(x) == 0:
        raise ValueError(f"indices must be a non-empty 1-D sequence of env indices, got shape {tuple(x.shape)}")
    if x.dtype == torch.bool or x.dtype.is_floating_point or x.dtype.is_complex:
        raise TypeError(f"indices must be integers, got dtype {x.dtype} (for a mask, pass np.flatnonzero(mask))")
    outside = (x < 0) | (x >= num_envs)
    if bool(outside.any()):
        raise ValueError(f"indices {x[outside].tolist()[:8]} are out of range for {num_envs} envs")
    if len(x.unique()) != len(x):
        raise ValueError(f"indices must be distinct, got {x.tolist()[:16]}")
    return x.to(device, torch.int64)


class DreamVectorEnv(VectorEnv):
    """``num_envs`` dreams of one world model, batched on ``device``.

    Args:
        num_envs: N.
        world_model, game, obs_mode, max_episode_steps, done_mode, dropout, render_mode: as :class:`DreamEnv`
            (``render()`` gives (N, 64, 64, 3) uint8).
        temperature: one tau for all envs or a length-N sequence / tensor; also a settable attribute
            (reads back as an (N,) array).
        device: ``auto`` (default: cuda when available), ``cpu`` or ``cuda``.
        autoreset_mode: ``NEXT_STEP`` (default) — the step after an env's episode ends resets it (reward 0,
            not done) — is the mode Gymnasium's vector wrappers (e.g. ``RecordEpisodeStatistics``) accept.
            ``SAME_STEP`` resets in the same step and puts the last observation in ``infos["final_obs"]``
            (``infos["_final_obs"]`` marks which envs), the shape SB3's VecEnv API wants.
        return_tensors: if True, observations, rewards, terminated and truncated are torch tensors on the
            device (and actions may be tensors there), so a GPU agent never copies to the host.
        sync_free: no step reads anything back from the device (default: on a device other than the CPU), so
            a GPU runs ahead of the Python loop. Autoresets write every env's row under a mask, and with
            ``return_tensors`` the actions given as tensors on the device are checked there: an invalid one
            is replaced by a valid one (clamped; NaN -> 0) and raises its ValueError at the next ``reset``,
            ``subset`` or ``render``, or at the latest :data:`ACTION_CHECK_EVERY` steps later. Off, an
            invalid action raises in its own step, before anything moves. The numbers are the same either way.

    Reset seeding: ``reset(seed=s)`` seeds env i with ``s + i``; ``reset(seed=[s0, s1, ...])`` seeds each
    env (None keeps an env's stream, or draws a key from ``np_random`` before the first seeding).
    :meth:`subset` continues some of the envs, exactly, in a smaller vector env.

    Example:
        >>> envs = gymnasium.make_vec("dreamgym/TakeCoverDream-v0", 1024, world_model="takecover")  # doctest: +SKIP
        >>> obs, _ = envs.reset(seed=0)  # doctest: +SKIP
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 30,
                                "autoreset_mode": AutoresetMode.NEXT_STEP}  # fmt: skip

    def __init__(self, num_envs: int = 1, world_model: str | os.PathLike | WorldModel | None = None, *,
                 game: str | None = None, temperature: float | Sequence[float] | torch.Tensor | None = None,
                 obs_mode: ObsMode = "zh", device: str | torch.device = "auto", max_episode_steps: int | None = None,
                 done_mode: DoneMode = "sample", dropout: float | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP, return_tensors: bool = False,
                 sync_free: bool | None = None, render_mode: str | None = None) -> None:  # fmt: skip
        mode = AutoresetMode(autoreset_mode)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ValueError(f"autoreset_mode must be NEXT_STEP or SAME_STEP, got {mode}")
        model = load_world_model(world_model, game, resolve_device(device))
        core = DreamCore(model, num_envs, temperature, obs_mode, max_episode_steps, done_mode, dropout)
        if sync_free is not None:
            core.sync_free = bool(sync_free)
        self._setup(core, mode, check_render_mode(render_mode, self.metadata["render_modes"]), bool(return_tensors))
        self._seeded = False
        self._autoreset: torch.Tensor | None = None  # (N,) envs to reset at the next step; None before reset

    def _setup(self, core: DreamCore, mode: AutoresetMode, render_mode: str | None, return_tensors: bool) -> None:
        """Everything that follows from the core: spaces of its N envs, metadata, the action checker."""
        self.core, self.game, self.num_envs, self.device = core, core.game, core.num_envs, core.device
        self.single_observation_space = observation_space(core.model, core.obs_mode)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.single_action_space = copy.deepcopy(self.game.action_space)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {**type(self).metadata, "autoreset_mode": mode, "render_fps": self.game.render_fps,
                         GAME_KEY: self.game.name}  # fmt: skip
        self.render_mode, self.return_tensors = render_mode, return_tensors
        deferred = core.sync_free and return_tensors  # numpy outputs read the device every step anyway
        self._check_actions = ActionChecker(self.single_action_space, self.num_envs, self.device, deferred)
        self._unchecked = 0  # steps since the deferred action check last read its flag

    @property
    def sync_free(self) -> bool:
        """Whether a step reads nothing back from the device (see the class docstring)."""
        return self.core.sync_free

    def _raise_deferred(self) -> None:
        """Raises the error of an invalid tensor action a deferred check recorded (no-op when checks are eager)."""
        if self._check_actions.deferred:
            self._unchecked = 0
            self._check_actions.raise_deferred()

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> DreamVectorEnv:
        """A new vector env of the envs ``indices`` selects (distinct, in that order; env i of the new env is env
        ``indices[i]`` here).

        Each env keeps its whole state (latent, LSTM state, steps taken, temperature, random stream, pending
        autoreset), so given the same actions it plays exactly what it would have played here (up to float
        rounding of batched matrix products). Settings (obs/done/autoreset modes, step cap, device,
        ``return_tensors``, ``render_mode``) are the same; the world model and M's packed weights are shared,
        nothing is reloaded. This env is left unchanged. Used to stop computing envs that are no longer
        needed (:func:`dreamgym.episodes.rollout_population`). The new env's ``spec`` is None (``make_vec`` did
        not make it).
        """
        self._raise_deferred()
        index = _env_indices(indices, self.num_envs, self.device)
        envs = type(self).__new__(type(self))
        envs._setup(self.core.take(index), self.autoreset_mode, self.render_mode, self.return_tensors)
        envs._seeded = self._seeded
        envs._autoreset = None if self._autoreset is None else self._autoreset[index]
        envs._np_random, envs._np_random_seed = copy.deepcopy(self._np_random), self._np_random_seed
        return envs

    @property
    def autoreset_mode(self) -> AutoresetMode:
        return self.metadata["autoreset_mode"]

    @property
    def temperature(self) -> np.ndarray:
        """(N,) float32 temperatures (set a number or a length-N sequence)."""
        return self.core.tau.cpu().numpy().copy()

    @temperature.setter
    def temperature(self, value: float | Sequence[float] | torch.Tensor) -> None:
        self.core.set_temperature(value)

    def reset(self, *, seed: Seeds = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Resets every env; see the class docstring for how ``seed`` is spread over the envs."""
        self._raise_deferred()
        seeds = self._seed_list(seed)
        given = [s is not None for s in seeds]
        if any(given):
            mask = None if all(given) else torch.tensor(given, device=self.device)
            self.core.seed([s if s is not None else 0 for s in seeds], mask)
        self._seeded = True
        self.core.reset()
        self._autoreset = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return self._output(self.core.observation()), {}

    def _seed_list(self, seed: Seeds) -> list[int | None]:
        """One seed (or None) per env; before the first seeding, None becomes a key from ``np_random``."""
        seeds = spread_seeds(seed, self.num_envs)
        if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
            super().reset(seed=int(seed))
        if not self._seeded:
            fresh = self.np_random.integers(2**63, size=self.num_envs)
            seeds = [int(f) if s is None else s for s, f in zip(seeds, fresh, strict=True)]
        return seeds

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        if self._autoreset is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        encoded = self.game.encode_action(self._check_actions(actions))
        self._unchecked += self._check_actions.deferred
        if self._unchecked >= ACTION_CHECK_EVERY:
            self._raise_deferred()
        infos: dict[str, Any] = {}
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            reward, terminated, truncated = self.core.step(encoded, self._autoreset)
            self._autoreset = terminated | truncated
        else:
            reward, terminated, truncated = self.core.step(encoded)
            done = terminated | truncated
            infos = self._final_infos(self.core.observation(), done)
            self.core.reset(done)
        obs = self.core.observation()
        return (*self._output(obs, reward, terminated, truncated), infos)

    def _output(self, *tensors: torch.Tensor) -> Any:
        """Fresh tensors on the device (``return_tensors``) or numpy arrays; one value if one tensor is given."""
        out: tuple[torch.Tensor | np.ndarray, ...]
        if self.return_tensors:  # inference tensors cannot enter autograd: give the agent ordinary copies
            out = tuple(t.clone() if t.is_inference() else t for t in tensors)
        else:
            out = tuple(t.cpu().numpy() for t in tensors)
        return out[0] if len(out) == 1 else out

    def _final_infos(self, final_obs: torch.Tensor, done: torch.Tensor) -> dict[str, Any]:
        """SAME_STEP infos: ``final_obs`` / ``final_info`` with their ``_`` masks for the envs that ended."""
        if self.return_tensors:
            flags = done.clone()
            return {"final_obs": final_obs, "_final_obs": flags, "final_info": {}, "_final_info": flags.clone()}
        mask = done.cpu().numpy()
        if not mask.any():
            return {}
        rows = final_obs.cpu().numpy()
        objects = np.full(self.num_envs, None, dtype=object)
        for i in np.flatnonzero(mask):  # only the envs that just ended
            objects[i] = rows[i]
        return {"final_obs": objects, "_final_obs": mask, "final_info": {}, "_final_info": mask.copy()}

    def render(self) -> np.ndarray | None:  # type: ignore[override]  # one (N, 64, 64, 3) array, not N frames
        if self.render_mode is None:
            gym.logger.warn("render() needs render_mode='rgb_array' at construction")
            return None
        self._raise_deferred()
        return self.core.render()
