"""Latent observations of a real game: V encodes every frame to z, M carries (h, c) over (z, action).

The observation is ``[z_t, (c_t,) h_t]`` with exactly the dream's semantics (:mod:`dreamgym.envs.dream`):
(h_t, c_t) is M's state after consuming (z_{t-1}, a_{t-1}), zero at reset. Actions are in the game spec's
action space (mapped to the raw game's with ``spec.to_game_action``), so a controller trained in the dream
runs here unchanged. Real rewards, termination and truncation pass through.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch.nn import functional as F

from dreamgym.devices import resolve_device
from dreamgym.envs.dream import (
    ActionChecker,
    ObsMode,
    check_obs_mode,
    latent_observation,
    load_world_model,
    observation_space,
)  # fmt: skip
from dreamgym.envs.rng import check_seed
from dreamgym.games import GAME_KEY, get_game
from dreamgym.models.vae import ConvVAE, frames_to_tensor, tensor_to_frames
from dreamgym.world_model import WorldModel

ZMode = Literal["sample", "mean"]
Z_MODES = ("sample", "mean")
RENDER_SCALE = 4


def upscale(frame: np.ndarray, factor: int = RENDER_SCALE) -> np.ndarray:
    """(H, W, 3) -> (factor*H, factor*W, 3) by pixel repetition."""
    return frame.repeat(factor, axis=0).repeat(factor, axis=1)


class FrameEncoder:
    """V's encoder as its tensors (no decoder, no module calls): real frames -> the mean and log-variance of z.

    The same kernels for every caller, so a frame encoded here, in a worker process or in a batch of one gives the
    same numbers (a batch of several may differ by float rounding).
    """

    def __init__(self, vae: ConvVAE) -> None:
        self.device = vae.fc_mu.weight.device
        self._convs = [(m.weight, m.bias, m.stride) for m in vae.encoder if isinstance(m, torch.nn.Conv2d)]
        self._mu = (vae.fc_mu.weight, vae.fc_mu.bias)
        self._logvar = (vae.fc_logvar.weight, vae.fc_logvar.bias)

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray, logvar: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 64, 64, 3) uint8 frames -> mu (B, Z) and logvar (B, Z) (None unless ``logvar``)."""
        x = frames_to_tensor(frames, self.device)
        for weight, bias, stride in self._convs:
            x = torch.relu_(F.conv2d(x, weight, bias, stride))
        features = x.flatten(1)
        return F.linear(features, *self._mu), F.linear(features, *self._logvar) if logvar else None


class LatentCore:
    """What V and M make of N real games: one z generator per env, M's LSTM state and restart flags.

    The one implementation of the latent view, shared by :class:`LatentObservation` (N = 1) and
    :class:`~dreamgym.envs.latent_vector.LatentVectorEnv`. Per step it does only what ``[z, (c,) h]`` needs:
    V's encoder (:class:`FrameEncoder`: mu, and logvar when z is sampled) and M's LSTM cell (none of M's heads),
    under ``torch.inference_mode``. Env i draws its z noise from its own generator, ``randn((1, Z))`` per frame,
    so it sees exactly the numbers a single env seeded like it sees.
    """

    def __init__(self, model: WorldModel, num_envs: int, obs_mode: str, z_mode: str) -> None:
        check_obs_mode(obs_mode)
        if z_mode not in Z_MODES:
            raise ValueError(f"z_mode must be 'sample' or 'mean', got {z_mode!r}")
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.model, self.num_envs, self.obs_mode, self.z_mode = model, num_envs, obs_mode, z_mode
        self.device = model.device
        self._generators = [torch.Generator(self.device) for _ in range(num_envs)]
        self._seeded = [False] * num_envs
        self._lstm = model.mdnrnn.lstm_weights()  # (weight_ih, weight_hh, bias_ih, bias_hh)
        self.encoder = FrameEncoder(model.vae)
        self._noise_shape = (1, model.config.vae.z_size)
        with torch.inference_mode():
            self.h, self.c = model.mdnrnn.initial_state(num_envs, self.device)
            self.restart = torch.ones(num_envs, device=self.device)
            self.z = torch.zeros(num_envs, model.config.vae.z_size, device=self.device)

    def seed(self, seeds: Sequence[int | None]) -> None:
        """Seeds env i's z generator with ``seeds[i]`` (already checked); None keeps its stream (a fresh random
        one before its first seeding)."""
        for i, (generator, seed) in enumerate(zip(self._generators, seeds, strict=True)):
            if seed is not None:
                generator.manual_seed(seed)
            elif not self._seeded[i]:
                generator.seed()
            self._seeded[i] = True

    @torch.inference_mode()
    def start(self, mask: np.ndarray | None = None) -> None:
        """New episodes in the envs of ``mask`` (N,) bool (all if None): h = c = 0 and restart = 1."""
        if mask is None:
            self.h, self.c = self.model.mdnrnn.initial_state(self.num_envs, self.device)
            self.restart = torch.ones(self.num_envs, device=self.device)
            return
        rows = torch.as_tensor(np.flatnonzero(mask), device=self.device)
        self.h[rows], self.c[rows], self.restart[rows] = 0.0, 0.0, 1.0

    @torch.inference_mode()
    def advance(self, action: torch.Tensor) -> None:
        """M's LSTM consumes (z, encoded ``action`` (N, A), restart): the state of the next observation."""
        inputs = self.model.mdnrnn.inputs(self.z, action, self.restart)
        self.h, self.c = torch.lstm_cell(inputs, (self.h, self.c), *self._lstm)
        self.restart = torch.zeros_like(self.restart)

    def observe(self, frames: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Encodes real frames (N, 64, 64, 3) uint8 to z, only those of the envs in ``mask`` (N,) bool (all if
        None; the others keep their z and draw nothing); returns ``[z, (c,) h]`` as a new (N, D) float32 array."""
        mu, logvar = self.encoder(frames if mask is None else frames[mask], logvar=self.z_mode == "sample")
        return self.observe_encoded(mu, logvar, mask)

    @torch.inference_mode()
    def observe_encoded(self, mu: torch.Tensor, logvar: torch.Tensor | None,
                        mask: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """:meth:`observe` from frames :class:`FrameEncoder` encoded already (one row per env of ``mask``)."""
        rows = None if mask is None else np.flatnonzero(mask)
        z = mu.to(self.device)
        if self.z_mode == "sample":
            assert logvar is not None, "z_mode='sample' needs the frames' logvar"
            generators = self._generators if rows is None else [self._generators[i] for i in rows]
            eps = [torch.randn(self._noise_shape, generator=g, device=self.device) for g in generators]
            noise = eps[0] if len(eps) == 1 else torch.cat(eps)
            z = torch.addcmul(z, torch.exp(0.5 * logvar.to(self.device)), noise)
        if rows is None:
            self.z = z
        else:
            self.z[torch.as_tensor(rows, device=self.device)] = z
        return latent_observation(self.z, self.h, self.c, self.obs_mode).cpu().numpy()

    @torch.inference_mode()
    def reconstruct(self) -> np.ndarray:
        """V's decoding of every env's z, (N, 64, 64, 3) uint8."""
        return tensor_to_frames(self.model.vae.decode(self.z))


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

    Seeds must be integers in [0, 2**64). Stepping an episode that has ended raises ``ResetNeeded`` before the
    game or M moves.
    """

    def __init__(self, env: gym.Env, world_model: str | os.PathLike | WorldModel | None = None, *,
                 game: str | None = None, obs_mode: ObsMode = "zh", device: str | torch.device = "cpu",
                 z_mode: ZMode = "sample", side_by_side: bool = False) -> None:  # fmt: skip
        super().__init__(env)
        if z_mode not in Z_MODES:
            raise ValueError(f"z_mode must be 'sample' or 'mean', got {z_mode!r}")
        self.model = load_world_model(world_model, game, resolve_device(device))
        self.game = self.model.game
        self.core = LatentCore(self.model, 1, obs_mode, z_mode)
        self.obs_mode, self.z_mode, self.side_by_side = obs_mode, z_mode, side_by_side
        self.observation_space = observation_space(self.model, obs_mode)
        self.action_space = copy.deepcopy(self.game.action_space)
        self.metadata = {**env.metadata, GAME_KEY: self.game.name}
        self._check_action = ActionChecker(self.action_space, None, self.model.device)
        self._encoded: dict[int, torch.Tensor] = {}  # a Discrete space's actions, encoded for M
        if isinstance(self.action_space, gym.spaces.Discrete):
            start = int(self.action_space.start)
            with torch.inference_mode():
                for a in range(start, start + int(self.action_space.n)):
                    self._encoded[a] = self.game.encode_action(torch.tensor([a], device=self.model.device))
        self._frame: np.ndarray | None = None  # the last real frame (64, 64, 3)
        self._needs_reset = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            seed = check_seed(seed)
        obs, info = self.env.reset(seed=seed, options=options)
        self.core.seed([seed])
        self.core.start()
        self._needs_reset = False
        return self._observe(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, Any, bool, bool, dict]:
        if self._needs_reset:
            raise gym.error.ResetNeeded(
                "call reset() before step()" if self._frame is None else "the episode has ended: call reset()"
            )
        encoded, game_action = self._action(action)
        self.core.advance(encoded)
        obs, reward, terminated, truncated, info = self.env.step(self.game.to_game_action(game_action))
        self._needs_reset = bool(terminated or truncated)
        return self._observe(obs), reward, terminated, truncated, info

    def _action(self, action: Any) -> tuple[torch.Tensor, Any]:
        """A checked action -> (M's encoding (1, A), the controller action for ``to_game_action``)."""
        if type(action) in (int, np.int64) and action in self._encoded:  # a valid Discrete action: no tensors
            return self._encoded[action], int(action)
        checked = self._check_action(action)
        game_action = checked[0].item() if checked.dim() == 1 else checked[0].cpu().numpy()
        return self.game.encode_action(checked), game_action

    def _observe(self, raw_obs: Any) -> np.ndarray:
        """The real observation's frame through V (and M's state): [z, (c,) h] as a (D,) float32 array."""
        self._frame = self.game.to_frame(raw_obs)
        return self.core.observe(self._frame[None])[0]

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
        return np.concatenate([upscale(self._frame), upscale(self.core.reconstruct()[0])], axis=1)


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
