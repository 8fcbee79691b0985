"""N real games seen through one world model: the games step in worker processes, V and M run batched here.

:class:`LatentVectorEnv` is ``gymnasium.make_vec("dreamgym/<Game>Latent-v0", num_envs=N)``. Each worker plays
one raw game and sends back only its 64x64 frame (``spec.to_frame`` runs in the worker); the main process
encodes all N frames in one V call and steps M's LSTM once for the batch (:class:`~dreamgym.envs.latent.LatentCore`,
the code :class:`~dreamgym.envs.latent.LatentObservation` runs for one game), while the workers play: M's update
needs only the actions, so it runs between sending them and collecting the frames. Env i of a vector env reset
with ``seed=s`` plays what a single latent env reset with ``seed=s + i`` plays, then ``reset()`` after each
episode (up to float rounding of V's batched convolutions).
"""

from __future__ import annotations

import copy
import functools
import numbers
import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dreamgym.devices import resolve_device
from dreamgym.envs.dream import ActionChecker, ObsMode, load_world_model, observation_space
from dreamgym.envs.latent import LatentCore, ZMode
from dreamgym.envs.rng import Seeds, spread_seeds
from dreamgym.games import FRAME_SHAPE, GAME_KEY, get_game
from dreamgym.world_model import WorldModel


def make_frame_game(game: str, max_episode_steps: int | None, render_mode: str | None,
                    game_kwargs: dict[str, Any]) -> gym.Env:  # fmt: skip
    """The real ``game`` (its step cap, or ``max_episode_steps``) whose observations are ``spec.to_frame``'s frames."""
    spec = get_game(game)
    real = spec.make_real_env(max_episode_steps, render_mode=render_mode, **game_kwargs)
    frames = gym.spaces.Box(0, 255, FRAME_SHAPE, np.uint8)
    return gym.wrappers.TransformObservation(real, spec.to_frame, frames)


class LatentVectorEnv(VectorEnv):
    """``num_envs`` real games, each seen as :class:`~dreamgym.envs.latent.LatentObservation` sees one.

    Args:
        num_envs: N, one worker process each.
        world_model, game, obs_mode, device, z_mode, max_episode_steps, render_mode: as
            :func:`~dreamgym.envs.latent.make_latent_env` (``render()`` gives the N games' own renders).
        autoreset_mode: ``NEXT_STEP`` (default) or ``DISABLED``.
        context: multiprocessing start method of the workers (default: the platform's).
        game_kwargs: go to each real game's ``gymnasium.make``.

    ``NEXT_STEP``: the step after env i's episode ends resets it (its action is ignored, reward 0, not done), and
    its observation is the new episode's first (the game's unseeded reset, as a single env's ``reset()``).
    ``DISABLED``: nothing resets by itself; ``reset(seed=..., options={"reset_mask": mask})`` resets the envs of
    ``mask`` (N,) bool (the others keep playing, their rows unchanged), so each episode can have its own seed;
    stepping an env whose episode ended raises ``ResetNeeded`` before anything moves.
    ``reset(seed=s)`` seeds env i with ``s + i``; ``reset(seed=[s0, s1, ...])`` seeds each env (None keeps its
    stream); seeds are integers in [0, 2**64).

    Example:
        >>> envs = gymnasium.make_vec("dreamgym/TakeCoverLatent-v0", num_envs=4)  # doctest: +SKIP
        >>> obs, _ = envs.reset(seed=0)  # doctest: +SKIP
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, world_model: str | os.PathLike | WorldModel | None = None, *,
                 game: str | None = None, obs_mode: ObsMode = "zh", device: str | torch.device = "cpu",
                 z_mode: ZMode = "sample", max_episode_steps: int | None = None, render_mode: str | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP, context: str | None = None,
                 **game_kwargs: Any) -> None:  # fmt: skip
        mode = AutoresetMode(autoreset_mode)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED):
            raise ValueError(f"autoreset_mode must be NEXT_STEP or DISABLED, got {mode}")
        model = load_world_model(world_model, game, resolve_device(device))
        self.core = LatentCore(model, num_envs, obs_mode, z_mode)  # checks num_envs, obs_mode and z_mode
        self.game, self.num_envs, self.device = model.game, num_envs, model.device
        make = functools.partial(make_frame_game, self.game.name, max_episode_steps, render_mode, game_kwargs)
        self.games = AsyncVectorEnv([make] * num_envs, context=context, autoreset_mode=mode)
        self.single_observation_space = observation_space(model, obs_mode)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.single_action_space = copy.deepcopy(self.game.action_space)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.metadata = {**self.games.metadata, "autoreset_mode": mode, GAME_KEY: self.game.name}
        self.render_mode = self.games.render_mode
        self._check_actions = ActionChecker(self.single_action_space, num_envs, self.device)
        self._ended: np.ndarray | None = None  # (N,) envs whose episode has ended; None before reset()
        self._frames: np.ndarray | None = None  # (N, 64, 64, 3) the frames V saw last

    @property
    def frames(self) -> np.ndarray:
        """The real frames of the last reset or step, as V saw them: (N, 64, 64, 3) uint8 (for recording)."""
        if self._frames is None:
            raise gym.error.ResetNeeded("call reset() first")
        return self._frames

    def reset(self, *, seed: Seeds = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Resets every game (or those of ``options["reset_mask"]``); see the class docstring for ``seed``."""
        seeds = spread_seeds(seed, self.num_envs)
        options = dict(options or {})
        mask = options.get("reset_mask")
        if mask is not None and (self._ended is None or self.metadata["autoreset_mode"] != AutoresetMode.DISABLED):
            raise ValueError("options['reset_mask'] needs autoreset_mode=DISABLED and a first reset() of every env")
        if isinstance(seed, numbers.Integral):
            super().reset(seed=int(seed))
        frames, infos = self.games.reset(seed=seeds, options=options or None)  # checks the mask
        self.core.seed(seeds if mask is None else [s if m else None for s, m in zip(seeds, mask, strict=True)])
        self.core.start(mask)
        self._ended = np.zeros(self.num_envs, dtype=bool) if mask is None else self._ended & ~mask
        self._frames = np.asarray(frames if mask is None else np.where(mask[:, None, None, None], frames, self._frames))
        return self.core.observe(frames, mask), infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._ended is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        next_step = self.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
        if not next_step and self._ended.any():
            raise gym.error.ResetNeeded(f"the episodes of envs {np.flatnonzero(self._ended).tolist()} have ended: "
                                        "reset them (options={'reset_mask': mask})")  # fmt: skip
        checked = self._check_actions(actions)
        game_actions = checked.cpu().numpy()
        self.games.step_async(np.stack([self.game.to_game_action(a) for a in game_actions]))
        self.core.advance(self.game.encode_action(checked))  # while the games play
        if next_step and self._ended.any():
            self.core.start(self._ended)  # these games are starting over instead
        frames, rewards, terminated, truncated, infos = self.games.step_wait()
        self._ended = terminated | truncated
        self._frames = frames
        return self.core.observe(frames), rewards, terminated, truncated, infos

    def render(self) -> tuple[Any, ...] | None:
        return self.games.render()

    def close_extras(self, **kwargs: Any) -> None:
        self.games.close(**kwargs)
