"""Latent observations of a real game: V encodes every frame to z, M carries (h, c) over (z, action).

The observation is ``[z_t, (c_t,) h_t]`` with exactly the dream's semantics (:mod:`dreamgym.envs.dream`):
(h_t, c_t) is M's state after consuming (z_{t-1}, a_{t-1}), zero at reset. Actions are in the game spec's
action space (mapped to the raw game's with ``spec.to_game_action``), so a controller trained in the dream
runs here unchanged. Real rewards, termination and truncation pass through.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from dreamgym.devices import resolve_device
from dreamgym.envs.dream import (
    GAME_KEY,
    ActionChecker,
    ObsMode,
    latent_observation,
    load_world_model,
    observation_space,
)  # fmt: skip
from dreamgym.games import get_game
from dreamgym.models.vae import frames_to_tensor, tensor_to_frames
from dreamgym.world_model import WorldModel

ZMode = Literal["sample", "mean"]
RENDER_SCALE = 4


def upscale(frame: np.ndarray, factor: int = RENDER_SCALE) -> np.ndarray:
    """(H, W, 3) -> (factor*H, factor*W, 3) by pixel repetition."""
    return frame.repeat(factor, axis=0).repeat(factor, axis=1)


class LatentObservation(gym.Wrapper[np.ndarray, Any, Any, Any]):
    """A raw real game (``spec.make_real_env()``) seen through a world model.

    Args:
        env: the real game, with the observations ``spec.to_frame`` expects.
        world_model: bundle folder, shipped name or loaded :class:`WorldModel` (default: shipped ``game``).
        game: game spec name, checked against the bundle's.
        obs_mode: ``zh`` (default), ``zch`` or ``z``.
        device: ``cpu`` (default), ``cuda`` or ``auto``.
        z_mode: ``sample`` z ~ N(mu, sigma) from a generator seeded by ``reset(seed=...)`` (default; what M
            was trained on), or ``mean`` z = mu.
        side_by_side: ``render()`` gives the real 64x64 frame next to V's reconstruction of z, both
            upscaled x4 (256, 512, 3); otherwise the real game's own ``render()``.
    """

    def __init__(self, env: gym.Env, world_model: str | os.PathLike | WorldModel | None = None, *,
                 game: str | None = None, obs_mode: ObsMode = "zh", device: str | torch.device = "cpu",
                 z_mode: ZMode = "sample", side_by_side: bool = False) -> None:  # fmt: skip
        super().__init__(env)
        if z_mode not in ("sample", "mean"):
            raise ValueError(f"z_mode must be 'sample' or 'mean', got {z_mode!r}")
        self.model = load_world_model(world_model, game, resolve_device(device))
        self.game = self.model.game
        self.obs_mode, self.z_mode, self.side_by_side = obs_mode, z_mode, side_by_side
        self.observation_space = observation_space(self.model, obs_mode)
        self.action_space = copy.deepcopy(self.game.action_space)
        self.metadata = {**env.metadata, GAME_KEY: self.game.name}
        self._check_action = ActionChecker(self.action_space, None, self.model.device)
        self._generator = torch.Generator(self.model.device)
        self._seeded = False
        self._frame: np.ndarray | None = None  # the last real frame (64, 64, 3)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self._generator.manual_seed(seed % 2**64)
        elif not self._seeded:
            self._generator.seed()
        self._seeded = True
        self._h, self._c = self.model.mdnrnn.initial_state(1, self.model.device)
        self._restart = torch.ones(1, device=self.model.device)
        return self._observe(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, Any, bool, bool, dict]:
        if self._frame is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        checked = self._check_action(action)
        with torch.inference_mode():
            _, (self._h, self._c) = self.model.mdnrnn.step(
                self._z, self.game.encode_action(checked), self._restart, (self._h, self._c)
            )
        self._restart = torch.zeros_like(self._restart)
        game_action = checked[0].item() if checked.dim() == 1 else checked[0].cpu().numpy()
        obs, reward, terminated, truncated, info = self.env.step(self.game.to_game_action(game_action))
        return self._observe(obs), reward, terminated, truncated, info

    @torch.inference_mode()
    def _observe(self, raw_obs: Any) -> np.ndarray:
        """Encodes the real observation's frame to z; returns [z, (c,) h] as a (D,) float32 array."""
        self._frame = self.game.to_frame(raw_obs)
        mu, logvar = self.model.vae.encode(frames_to_tensor(self._frame[None], self.model.device))
        if self.z_mode == "sample":
            eps = torch.randn(mu.shape, generator=self._generator, device=mu.device)
            mu = torch.addcmul(mu, torch.exp(0.5 * logvar), eps)
        self._z = mu
        return latent_observation(self._z, self._h, self._c, self.obs_mode)[0].cpu().numpy()

    @property
    def frame(self) -> np.ndarray:
        """The last real frame, as V saw it (64, 64, 3) uint8."""
        if self._frame is None:
            raise gym.error.ResetNeeded("call reset() first")
        return self._frame

    def render(self) -> Any:
        if not self.side_by_side or self.render_mode is None:
            return self.env.render()
        if self._frame is None:
            raise gym.error.ResetNeeded("call reset() before render()")
        with torch.inference_mode():
            reconstruction = tensor_to_frames(self.model.vae.decode(self._z))[0]
        return np.concatenate([upscale(self._frame), upscale(reconstruction)], axis=1)


def make_latent_env(game: str, world_model: str | os.PathLike | WorldModel | None = None, *, obs_mode: ObsMode = "zh",
                    device: str | torch.device = "cpu", z_mode: ZMode = "sample", side_by_side: bool = False,
                    max_episode_steps: int | None = None, render_mode: str | None = None,
                    **game_kwargs: Any) -> LatentObservation:  # fmt: skip
    """The real ``game`` (its step cap, or ``max_episode_steps``) wrapped in :class:`LatentObservation`.

    ``game_kwargs`` go to the real game's ``gymnasium.make``.
    """
    spec = get_game(game)
    real = spec.make_real_env(max_episode_steps, render_mode=render_mode, **game_kwargs)
    return LatentObservation(real, world_model, game=spec.name, obs_mode=obs_mode, device=device, z_mode=z_mode,
                             side_by_side=side_by_side)  # fmt: skip
