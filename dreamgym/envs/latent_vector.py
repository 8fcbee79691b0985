"""N real games seen through one world model: the games step in worker processes, M runs batched here.

:class:`LatentVectorEnv` is ``gymnasium.make_vec("dreamgym/<Game>Latent-v0", num_envs=N)``. Each worker plays
one raw game and makes its 64x64 frame (``spec.to_frame``). Where V's encoder runs is ``encode_in``: on a CPU
in the workers (``workers``, each on one thread, sending the frame with its mu and logvar), so that the N
encodings use the cores the games do; on a GPU in the main process (``main``), all N frames in one V call. The
main process samples z and steps M's LSTM once for the batch (:class:`~dreamgym.envs.latent.LatentCore`, the
code :class:`~dreamgym.envs.latent.LatentObservation` runs for one game), while the workers play: M's update
needs only the actions, so it runs between sending them and collecting the frames. Env i of a vector env reset
with ``seed=s`` plays what a single latent env reset with ``seed=s + i`` plays, then ``reset()`` after each
episode (up to float rounding of batched matrix products).
"""

from __future__ import annotations

import copy
import functools
import numbers
import os
from collections.abc import Callable
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dreamgym.devices import resolve_device
from dreamgym.envs.dream import ActionChecker, ObsMode, load_world_model, observation_space
from dreamgym.envs.latent import FrameEncoder, LatentCore, ZMode
from dreamgym.envs.rng import Seeds, spread_seeds
from dreamgym.games import FRAME_SHAPE, GAME_KEY, get_game
from dreamgym.models.vae import ConvVAE
from dreamgym.world_model import WorldModel

EncodeIn = Literal["main", "workers"]
ENCODE_IN = ("main", "workers")


def make_frame_game(game: str, max_episode_steps: int | None, render_mode: str | None,
                    game_kwargs: dict[str, Any]) -> gym.Env:  # fmt: skip
    """The real ``game`` (its step cap, or ``max_episode_steps``) whose observations are ``spec.to_frame``'s frames."""
    spec = get_game(game)
    real = spec.make_real_env(max_episode_steps, render_mode=render_mode, **game_kwargs)
    frames = gym.spaces.Box(0, 255, FRAME_SHAPE, np.uint8)
    return gym.wrappers.TransformObservation(real, spec.to_frame, frames)


class EncodedFrames(gym.ObservationWrapper[dict[str, np.ndarray], Any, np.ndarray]):
    """A worker's frame game whose observations carry V's encoding too: ``{"frame", "mu", "logvar"}``.

    Made in the worker process, which it sets to one torch thread (the other cores are the other games').
    ``logvar=False`` (z = mu) leaves logvar zero.
    """

    def __init__(self, env: gym.Env, vae: ConvVAE, logvar: bool) -> None:
        super().__init__(env)
        torch.set_num_threads(1)
        self.encoder, self.logvar = FrameEncoder(vae), logvar
        stats = gym.spaces.Box(-np.inf, np.inf, (vae.config.z_size,), np.float32)
        spaces = {"frame": env.observation_space, "mu": stats, "logvar": stats}
        self.observation_space = gym.spaces.Dict(spaces)  # type: ignore[assignment]  # Gymnasium's Dict is untyped

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        mu, logvar = self.encoder(observation[None], self.logvar)
        return {"frame": observation, "mu": mu[0].numpy(),
                "logvar": torch.zeros_like(mu[0]).numpy() if logvar is None else logvar[0].numpy()}  # fmt: skip


def make_encoded_game(make_game: Callable[[], gym.Env], vae: ConvVAE, logvar: bool) -> gym.Env:
    return EncodedFrames(make_game(), vae, logvar)


class LatentVectorEnv(VectorEnv):
    """``num_envs`` real games, each seen as :class:`~dreamgym.envs.latent.LatentObservation` sees one.

    Args:
        num_envs: N, one worker process each.
        world_model, game, obs_mode, device, z_mode, max_episode_steps, render_mode: as
            :func:`~dreamgym.envs.latent.make_latent_env` (``render()`` gives the N games' own renders).
        encode_in: where V encodes the frames: ``workers`` (each game's process, on one CPU thread) or ``main``
            (this process, batched, on ``device``); default: ``workers`` when ``device`` is the CPU, else ``main``.
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
                 encode_in: EncodeIn | None = None, **game_kwargs: Any) -> None:  # fmt: skip
        mode = AutoresetMode(autoreset_mode)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED):
            raise ValueError(f"autoreset_mode must be NEXT_STEP or DISABLED, got {mode}")
        model = load_world_model(world_model, game, resolve_device(device))
        self.core = LatentCore(model, num_envs, obs_mode, z_mode)  # checks num_envs, obs_mode and z_mode
        self.game, self.num_envs, self.device = model.game, num_envs, model.device
        self.encode_in = encode_in or ("workers" if self.device.type == "cpu" else "main")
        if self.encode_in not in ENCODE_IN:
            raise ValueError(f"encode_in must be one of {ENCODE_IN}, got {encode_in!r}")
        make = functools.partial(make_frame_game, self.game.name, max_episode_steps, render_mode, game_kwargs)
        if self.encode_in == "workers":
            vae = model.vae if self.device.type == "cpu" else copy.deepcopy(model.vae).cpu()
            make = functools.partial(make_encoded_game, make, vae, z_mode == "sample")
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
        games_obs, infos = self.games.reset(seed=seeds, options=options or None)  # checks the mask
        self.core.seed(seeds if mask is None else [s if m else None for s, m in zip(seeds, mask, strict=True)])
        self.core.start(mask)
        self._ended = np.zeros(self.num_envs, dtype=bool) if mask is None else self._ended & ~mask
        return self._observe(games_obs, mask), infos

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
        games_obs, rewards, terminated, truncated, infos = self.games.step_wait()
        self._ended = terminated | truncated
        return self._observe(games_obs), rewards, terminated, truncated, infos

    def _observe(self, games_obs: Any, mask: np.ndarray | None = None) -> np.ndarray:
        """The games' frames (and their encodings) of the envs of ``mask`` (all if None) -> observations."""
        if self.encode_in == "main":
            frames, obs = games_obs, self.core.observe(games_obs, mask)
        else:
            frames, rows = games_obs["frame"], slice(None) if mask is None else mask
            mu, logvar = torch.from_numpy(games_obs["mu"][rows]), torch.from_numpy(games_obs["logvar"][rows])
            obs = self.core.observe_encoded(mu, logvar, mask)
        self._frames = np.asarray(frames if mask is None else np.where(mask[:, None, None, None], frames, self._frames))
        return obs

    def render(self) -> tuple[Any, ...] | None:
        return self.games.render()

    def close_extras(self, **kwargs: Any) -> None:
        self.games.close(**kwargs)
