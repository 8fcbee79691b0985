"""The dream: M generates every observation, reward and episode end; V only draws the pictures.

:class:`DreamCore` holds N dreams as batched tensors and is the one implementation of the dynamics;
:class:`DreamEnv` is a ``gymnasium.Env`` over a core of one dream, and
:class:`~dreamgym.envs.dream_vector.DreamVectorEnv` exposes all N at once.

Rules (the same in both envs):

- Observation ``[z_t, (c_t,) h_t]`` (``obs_mode`` ``zh``, ``zch`` or ``z``): (h_t, c_t) is M's LSTM state after
  consuming (z_{t-1}, a_{t-1}); h_0 = c_0 = 0 at reset, exactly as in the latent wrapper over the real game.
- Reset: z_0 = mu + exp(logvar / 2) * eps for one of the bundle's stored initial latents, picked uniformly
  (frame ``initial_step`` of real episodes; then a dream lasts the game's cap minus ``initial_step`` steps).
- Step: M reads ``[z_t, encode(a_t), restart_t]`` (restart = 1 at an episode's first step, if M takes it);
  z_{t+1} is sampled from the per-dimension mixtures at temperature tau (component by inverse CDF of
  softmax(log_pi / tau), Gaussian noise scaled by sqrt(tau)).
- Done: terminated ~ Bernoulli(p) with p = M's calibrated done probability (``done_mode="sample"``), or
  terminated = p > 0.5 (``done_mode="threshold"``). Truncated once ``max_episode_steps`` steps are taken.
- Cap: the game's step cap, as in the real game (TakeCover 2,100 steps); by default less the bundle's
  ``initial_step``, the frame its dreams start at. ``max_episode_steps`` sets it, up to the game's cap and never
  beyond (a larger value is cut to the cap, with a warning): the real engine ends its episodes there whatever a
  ``TimeLimit`` says, and M never saw later steps. (Up to the cap itself: a dream started at frame 0 by hand, as
  ``dreamgym.tools.record`` starts one, may last as long as the real episode.) So ``gymnasium.make(id,
  max_episode_steps=N)`` (Gymnasium's ``TimeLimit(N)`` around the env) and ``gymnasium.make_vec(id,
  max_episode_steps=N)`` (N handed to the vector env) both truncate at min(N, the game's cap).
- Dropout (``dropout`` p > 0, default: the rate M was trained with, 0 for most): each step, M's heads read h
  through a fresh dropout mask, so every step comes from another sub-network of M (an implicit ensemble; see
  :mod:`dreamgym.models.mdnrnn`). The masks come from the same seeded draw, so episodes stay reproducible.
- Reward: ``survival`` games give +1.0 for every step including the terminal one (the return equals the
  episode length, as in VizDoom TakeCover); ``predicted`` games give M's reward head for the transition.
- Randomness: one counter-based draw (:mod:`dreamgym.envs.rng`) per reset or step per env, keyed by the
  env's seed, so a seed fixes the episode. Env i of a vector env reset with seed ``s`` draws exactly the
  numbers a single env seeded ``s + i`` draws, and its state matches that env's up to the float rounding of
  batched matrix products (~1e-6). What is not guaranteed: over long episodes the rounding can put a uniform
  on the other side of a mixture component's or the done probability's boundary, and from then on the two
  episodes differ (16 of 64 TakeCover dreams did within 1,500 steps). Bit-identical replays need the same
  batch: the same seed in an env of the same size (or a copy of the env, which continues bit-identically).
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from dreamgym.devices import resolve_device
from dreamgym.envs.rng import CounterRNG, box_muller, check_seed, seed_keys
from dreamgym.games import GAME_KEY, GameSpec, get_game
from dreamgym.models.mdnrnn import FusedStep, check_dropout, check_temperature, sample_from_logits
from dreamgym.models.vae import tensor_to_frames
from dreamgym.world_model import WorldModel

ObsMode = Literal["zh", "zch", "z"]
DoneMode = Literal["sample", "threshold"]
OBS_MODES = ("zh", "zch", "z")
DONE_MODES = ("sample", "threshold")
# Dream temperature by game: the paper's TakeCover tau; 1.0 (M's own distribution) otherwise.


def load_world_model(world_model: str | os.PathLike | WorldModel | None, game: str | None,
                     device: torch.device) -> WorldModel:  # fmt: skip
    """The bundle on ``device``: a folder, shipped name or loaded model (default: the shipped ``game`` bundle)."""
    spec = None
    if game is not None:
        try:
            spec = get_game(game)
        except KeyError as err:
            raise ValueError(str(err.args[0])) from None
    if world_model is None:
        if spec is None:
            raise ValueError("pass world_model= (bundle folder or shipped name) or game=")
        world_model = spec.name
    if isinstance(world_model, WorldModel):
        same = world_model.device.type == device.type and world_model.device.index in (None, device.index)
        model = world_model if same else copy.deepcopy(world_model).to(device)
    elif isinstance(world_model, (str, os.PathLike)):
        model = WorldModel.load(world_model, device)
    else:
        raise TypeError(f"world_model must be a folder, a shipped bundle name or a WorldModel, not {type(world_model)}")
    if spec is not None and model.config.game != spec.name:
        raise ValueError(f"the world model is for game {model.config.game!r}, not {spec.name!r}")
    if model.game.reward_mode == "predicted" and model.mdnrnn.reward is None:
        raise ValueError(f"game {model.game.name!r} takes rewards from M, but this M has no reward head")
    return model.eval()


def check_obs_mode(obs_mode: str) -> None:
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")


def observation_space(model: WorldModel, obs_mode: str) -> gym.spaces.Box:
    """Box of [z, (c,) h] for this model: Z + (2H | H | 0) float32 values."""
    check_obs_mode(obs_mode)
    cfg = model.config.mdnrnn
    size = cfg.z_size + {"zh": 1, "zch": 2, "z": 0}[obs_mode] * cfg.hidden_size
    return gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)


def latent_observation(z: torch.Tensor, h: torch.Tensor, c: torch.Tensor, obs_mode: str) -> torch.Tensor:
    """z (B, Z), h and c (B, H) -> a new (B, D) tensor [z, (c,) h]."""
    parts = {"zh": (z, h), "zch": (z, c, h), "z": (z,)}[obs_mode]
    return torch.cat(parts, dim=-1)


def real_numbers(value: Any) -> bool:
    """Whether ``value`` (a number, sequence, array or tensor) holds real, non-boolean numbers only: checked
    before torch converts it, so a string gets the env's error rather than torch's."""
    if isinstance(value, torch.Tensor):
        return not (value.dtype == torch.bool or value.dtype.is_complex)
    return np.asarray(value).dtype.kind in "iuf"


class ActionChecker:
    """Validates actions for a Discrete or Box space and returns them as a tensor on ``device``.

    ``batch=None`` checks one action of the space's shape, else a batch (B, *shape). Discrete actions must
    be integers in range (-> int64 (B,)); Box actions must be finite numbers (-> float32 (B, *shape),
    clipped to the bounds as the real games' action mapping does). Every problem is one ValueError or
    TypeError naming it.

    ``deferred=True`` checks the values of actions that are already tensors on ``device`` without reading them
    back to the host (a GPU step then waits for nothing): an invalid one is recorded on the device, replaced by a
    valid one (clamped into range; NaN -> 0, then clipped), and :meth:`raise_deferred` raises its error
    later. Host actions (numpy, lists, CPU tensors for another device) are always checked at once, on the host.
    """

    def __init__(self, space: gym.spaces.Space, batch: int | None, device: torch.device,
                 deferred: bool = False) -> None:  # fmt: skip
        if not isinstance(space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise TypeError(f"dreamgym supports Discrete and Box action spaces, not {space}")
        self.space, self.device, self.deferred = space, device, deferred
        shape = space.shape if isinstance(space, gym.spaces.Box) else ()  # a Discrete space's shape is ()
        self.shape = shape if batch is None else (batch, *shape)
        if isinstance(space, gym.spaces.Box):
            self.low = torch.as_tensor(space.low, dtype=torch.float32, device=device)
            self.high = torch.as_tensor(space.high, dtype=torch.float32, device=device)
        # set by a deferred check that failed, until raise_deferred; a normal tensor, so that steps inside and
        # outside inference mode may update it in place
        with torch.inference_mode(False):
            self._invalid = torch.zeros((), dtype=torch.bool, device=device)

    def __call__(self, actions: Any) -> torch.Tensor:
        if isinstance(actions, torch.Tensor):
            x = actions.detach()
        else:
            array = np.asarray(actions)
            if array.dtype.kind not in "biuf":
                raise TypeError(f"actions must be numbers, got {actions!r} (dtype {array.dtype})")
            if array.dtype == np.uint64:  # torch has no comparisons for uint64: int64 holds every valid action
                if bool((array > np.iinfo(np.int64).max).any()):
                    raise ValueError(f"actions {actions!r} are out of range for {self.space}")
                array = array.astype(np.int64)
            x = torch.tensor(array)
        if tuple(x.shape) != self.shape:
            raise ValueError(f"action shape {tuple(x.shape)} does not match {self.shape} for action space {self.space}")
        if x.dtype == torch.bool or x.dtype.is_complex:
            raise TypeError(f"actions must be real numbers, got dtype {x.dtype}")
        defer = self.deferred and x.device == self.device
        if isinstance(self.space, gym.spaces.Discrete):
            return self._discrete(x, self.space, defer).reshape(-1)
        return self._box(x, defer).reshape(-1, *self.space.shape)

    def _discrete(self, x: torch.Tensor, space: gym.spaces.Discrete, defer: bool) -> torch.Tensor:
        if x.dtype.is_floating_point:
            raise TypeError(f"{space} actions must be integers, got dtype {x.dtype}")
        lo, hi = int(space.start), int(space.start + space.n)
        outside = (x < lo) | (x >= hi)
        if defer:
            self._invalid |= outside.any()
            return x.clamp(lo, hi - 1).to(torch.int64)
        if bool(outside.any()):
            raise ValueError(f"actions {x[outside].tolist()[:8]} are out of range for {space} ({lo}..{hi - 1})")
        return x.to(self.device, torch.int64)

    def _box(self, x: torch.Tensor, defer: bool) -> torch.Tensor:
        x = x.to(torch.float32)
        finite = torch.isfinite(x)
        if defer:
            self._invalid |= ~finite.all()
            x = x.nan_to_num(0.0)  # and +-inf to the largest floats, which the clamp below takes to the bounds
        elif not bool(finite.all()):
            raise ValueError(f"actions contain NaN or inf: {x[~finite].tolist()[:8]}")
        return torch.maximum(torch.minimum(x.to(self.device), self.high), self.low)

    def raise_deferred(self) -> None:
        """Raises the error of an invalid action a deferred check recorded since the last call (reads one flag
        from the device)."""
        if bool(self._invalid):
            self._invalid.zero_()
            bound = "integers in range" if isinstance(self.space, gym.spaces.Discrete) else "finite"
            raise ValueError(f"an action given as a tensor on {self.device} since the last check was invalid for "
                             f"{self.space} (actions must be {bound}); it was replaced by a valid one")  # fmt: skip


class DreamCore:
    """N dreams as batched tensors on the world model's device (the dream's one transition function).

    State: z (N, Z), h and c (N, H), restart flags (N,), steps taken (N,), temperatures tau (N,), and the
    counter-based generator. Each :meth:`reset` or :meth:`step` takes one draw of Z + 2*ceil(Z/2) + 1
    uniforms per env: Z pick mixture components, 2*ceil(Z/2) give normals (Box-Muller), the next decides
    done on a step or picks the initial latent on a reset; with ``dropout`` > 0, H more give the step's
    dropout mask (the first lanes, and so a dream without dropout, are unchanged by them).

    The state lives in M's :class:`~dreamgym.models.mdnrnn.FusedStep`, which updates it in place; ``z``,
    ``h``, ``c`` and ``restart`` are views of it (assigning to ``z`` copies into it).

    ``sync_free`` (default: on a device other than the CPU): a step, autoresets included, reads nothing back
    to the host; new episodes are written into every env's row under a mask instead of into the rows of the
    envs that start (which the host would have to look up). Both give the same numbers.
    """

    def __init__(self, model: WorldModel, num_envs: int, temperature: float | Any | None, obs_mode: str,
                 max_episode_steps: int | None, done_mode: str, dropout: float | None = None) -> None:  # fmt: skip
        """``temperature`` defaults to the game's, ``max_episode_steps`` to the game's cap minus the bundle's
        ``initial_step``, ``dropout`` to the rate M was trained with (None)."""
        check_obs_mode(obs_mode)
        game = model.game
        if done_mode not in DONE_MODES:
            raise ValueError(f"done_mode must be one of {DONE_MODES}, got {done_mode!r}")
        dropout = model.config.mdnrnn.dropout if dropout is None else dropout
        check_dropout(dropout)
        if max_episode_steps is None:
            max_episode_steps = game.max_episode_steps - model.initial_step
        if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int) or max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be a positive integer, got {max_episode_steps!r}")
        max_episode_steps = game.capped(max_episode_steps)
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.model, self.game = model, game
        self.num_envs, self.obs_mode, self.done_mode = num_envs, obs_mode, done_mode
        self.max_episode_steps = max_episode_steps
        self.device = model.device
        self.sync_free = self.device.type != "cpu"
        cfg = model.config.mdnrnn
        self.z_size, self.dropout = cfg.z_size, float(dropout)
        self._lanes = cfg.z_size + 2 * math.ceil(cfg.z_size / 2) + 1  # lanes of a draw before the dropout mask
        self.rng = CounterRNG(num_envs, self._lanes + (cfg.hidden_size if dropout > 0 else 0), self.device)
        with torch.inference_mode():
            self._cell = FusedStep(model.mdnrnn, num_envs)  # holds z, h, action, restart and c
            restart = self._cell.restart  # a view of the state buffer when M has the restart input, else None
            self._restart = restart if restart is not None else torch.zeros(num_envs, device=self.device)
            self.steps = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self.set_temperature(game.dream_temperature if temperature is None else temperature)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling: the restart flags are a view of the (unpickled) state buffer again."""
        self.__dict__.update(state)
        if self._cell.restart is not None:
            self._restart = self._cell.restart

    @property
    def z(self) -> torch.Tensor:
        """(N, Z) current latents (a view of the state buffer; assigning copies into it)."""
        return self._cell.z

    @z.setter
    def z(self, value: torch.Tensor) -> None:
        with torch.inference_mode():
            self._cell.z.copy_(value)

    @property
    def h(self) -> torch.Tensor:
        """(N, H) LSTM hidden states (a view of the state buffer)."""
        return self._cell.h

    @property
    def c(self) -> torch.Tensor:
        """(N, H) LSTM cell states."""
        return self._cell.c

    @property
    def restart(self) -> torch.Tensor:
        """(N,) 1.0 where the next step is an episode's first."""
        return self._restart

    def set_temperature(self, temperature: float | Any) -> None:
        """One tau for all envs or one per env ((N,) sequence or tensor); each finite and > 0."""
        if not real_numbers(temperature):
            raise TypeError(f"temperature must be a real number (or one per env), got {temperature!r}")
        tau = torch.as_tensor(temperature, dtype=torch.float32).detach()
        if tau.dim() == 0:
            tau = tau.expand(self.num_envs)
        if tuple(tau.shape) != (self.num_envs,):
            raise ValueError(
                f"temperature must be a number or have shape ({self.num_envs},), got shape {tuple(tau.shape)}"
            )
        check_temperature(tau)
        with torch.inference_mode():
            self.tau = tau.to(self.device).clone()

    @torch.inference_mode()
    def take(self, index: torch.Tensor) -> DreamCore:
        """A new core of the envs ``index`` (B,) selects (distinct int64 indices on the device, in that order).

        Each keeps its whole state (z, h, c, restart flag, steps taken, tau, RNG key and counter), so it
        continues exactly as it would have here; the world model, settings and M's packed weights are shared,
        the state is not (this core is unchanged and independent).
        """
        core = copy.copy(self)  # model, game and settings
        core.num_envs = len(index)
        core._cell = self._cell.take(index)
        core._restart = core._cell.restart if core._cell.restart is not None else self._restart[index]
        core.steps, core.tau, core.rng = self.steps[index], self.tau[index], self.rng.take(index)
        return core

    def seed(self, seeds: list[int], mask: torch.Tensor | None = None) -> None:
        """New keys from ``seeds`` (one per env) for the envs in ``mask`` (all if None)."""
        with torch.inference_mode():
            self.rng.seed(seed_keys(seeds, self.device), mask)

    def _draw(self, advance: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """(component uniforms (N, Z), normals (N, Z), done/pick uniform (N,), mask uniforms (N, H or 0)) of a draw."""
        u, n = self.rng.draw(advance), self._lanes
        return u[:, : self.z_size], box_muller(u[:, self.z_size : n - 1])[:, : self.z_size], u[:, n - 1], u[:, n:]

    def _start(self, mask: torch.Tensor | None, noise: torch.Tensor, pick: torch.Tensor) -> None:
        """New episodes in the envs of ``mask`` (all if None) from a draw's normals (N, Z) and uniforms (N,).

        z_0 = mu + exp(logvar / 2) * noise for the stored initial latent ``pick`` selects; h = c = 0, restart = 1.
        """
        if mask is not None and self.sync_free:  # masked writes to every env: no device sync
            z0 = self._initial_z(pick, noise)
            rows = mask.unsqueeze(1)
            torch.where(rows, z0, self.z, out=self.z)
            self.h.masked_fill_(rows, 0.0)
            self.c.masked_fill_(rows, 0.0)
            self._restart.masked_fill_(mask, 1.0)
            self.steps.masked_fill_(mask, 0)
            return
        # else write only the rows of the envs that start (usually a few of N)
        index: slice | torch.Tensor = slice(None) if mask is None else mask.nonzero().squeeze(1)
        if isinstance(index, torch.Tensor) and len(index) == 0:
            return
        self.z[index] = self._initial_z(pick[index], noise[index])
        self.h[index] = 0.0
        self.c[index] = 0.0
        self._restart[index] = 1.0
        self.steps[index] = 0

    def _initial_z(self, pick: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """z_0 (B, Z) = mu + exp(logvar / 2) * noise (B, Z) for the stored initial latents ``pick`` (B,) selects."""
        n = self.model.initial_mu.shape[0]
        index = (pick * n).to(torch.int64).clamp_(max=n - 1)
        return torch.addcmul(self.model.initial_mu[index], torch.exp(0.5 * self.model.initial_logvar[index]), noise)

    @torch.inference_mode()
    def reset(self, mask: torch.Tensor | None = None) -> None:
        """New episodes in the envs of ``mask`` (all if None), one draw each."""
        _, noise, pick, _ = self._draw(mask)
        self._start(mask, noise, pick)

    @torch.inference_mode()
    def step(self, action: torch.Tensor, autoreset: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """One transition of every dream for encoded actions (N, A) -> reward (N,), terminated, truncated (N,) bool.

        Envs in ``autoreset`` (N,) bool start a new episode instead, from this step's draw (Gymnasium's
        NEXT_STEP autoreset): their action is ignored, reward 0, not terminated or truncated.
        """
        component, noise, last, keep = self._draw()
        self._cell.action.copy_(action)
        head_mask = None
        if self.dropout > 0:  # keep a unit with probability 1 - p, scaled by 1 / (1 - p)
            head_mask = keep.ge_(self.dropout).mul_(1.0 / (1.0 - self.dropout))
        out = self._cell(head_mask)  # h and c updated in place
        self.z.copy_(sample_from_logits(out.logits, out.mu, out.log_sigma, self.tau, component, noise))
        p_done = self.model.mdnrnn.done_probability(out.done_logit)
        terminated = last < p_done if self.done_mode == "sample" else p_done > 0.5
        reward = torch.ones_like(p_done) if self.game.reward_mode == "survival" else out.reward.clone()
        self._restart.zero_()
        self.steps += 1
        truncated = self.steps >= self.max_episode_steps
        if autoreset is not None:
            self._start(autoreset, noise, last)
            reward.masked_fill_(autoreset, 0.0)
            terminated &= ~autoreset
            truncated &= ~autoreset
        return reward, terminated, truncated

    def observation(self) -> torch.Tensor:
        """A new (N, D) tensor [z, (c,) h] (an ordinary tensor, usable with autograd)."""
        return latent_observation(self.z, self.h, self.c, self.obs_mode)

    @torch.inference_mode()
    def render(self) -> np.ndarray:
        """V's decoding of every current z: (N, 64, 64, 3) uint8."""
        return tensor_to_frames(self.model.vae.decode(self.z))


def check_render_mode(render_mode: str | None, modes: list[str]) -> str | None:
    if render_mode is not None and render_mode not in modes:
        raise ValueError(f"render_mode must be None or one of {modes}, got {render_mode!r}")
    return render_mode


class DreamEnv(gym.Env[np.ndarray, Any]):
    """One dream of a world model as a ``gymnasium.Env`` (see the module docstring for the rules).

    Args:
        world_model: bundle folder, shipped bundle name or loaded :class:`WorldModel` (default: the shipped
            bundle named after ``game``).
        game: game spec name; checked against the bundle's (registered ids pass it).
        temperature: tau of the next-z samples (default 1.15 for TakeCover as in the paper, else 1.0);
            also a settable attribute.
        obs_mode: ``zh`` (default), ``zch`` (the paper's TakeCover controller input) or ``z``.
        device: ``cpu`` (default), ``cuda`` or ``auto``.
        max_episode_steps: step cap (default and most: the game's, 2100 for TakeCover; see the module docstring).
        done_mode: ``sample`` (done ~ Bernoulli(p), default) or ``threshold`` (done = p > 0.5).
        dropout: p in [0, 1): M's heads read h through a fresh dropout mask every step, an ensemble of
            sub-networks a controller cannot exploit one member of (default: the rate M was trained with,
            which is 0 unless ``training.mdnrnn --dropout`` was given; on an M trained without dropout it only
            adds noise).
        render_mode: None or ``rgb_array`` (V's decoding of z, (64, 64, 3) uint8).

    Example:
        >>> env = gymnasium.make("dreamgym/TakeCoverDream-v0", world_model="runs/tc")  # doctest: +SKIP
        >>> obs, info = env.reset(seed=0)  # doctest: +SKIP
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, world_model: str | os.PathLike | WorldModel | None = None, *, game: str | None = None,
                 temperature: float | None = None, obs_mode: ObsMode = "zh", device: str | torch.device = "cpu",
                 max_episode_steps: int | None = None, done_mode: DoneMode = "sample", dropout: float | None = None,
                 render_mode: str | None = None) -> None:  # fmt: skip
        model = load_world_model(world_model, game, resolve_device(device))
        self.game: GameSpec = model.game
        self.core = DreamCore(model, 1, temperature, obs_mode, max_episode_steps, done_mode, dropout)
        self.observation_space = observation_space(model, obs_mode)
        self.action_space = copy.deepcopy(self.game.action_space)
        self.metadata = {**self.metadata, "render_fps": self.game.render_fps, GAME_KEY: self.game.name}
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        self._check_action = ActionChecker(self.action_space, None, self.core.device)
        self._seeded = False
        self._needs_reset = True

    @property
    def temperature(self) -> float:
        return float(self.core.tau[0])

    @temperature.setter
    def temperature(self, value: float) -> None:
        if np.ndim(value) != 0:
            raise ValueError(f"a single dream takes one temperature, got {value!r}")
        self.core.set_temperature(value)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """New episode; ``seed`` (an integer in [0, 2**64)) fixes it (an env never seeded takes a key from
        ``np_random``)."""
        if seed is not None:
            check_seed(seed)
        super().reset(seed=seed)
        if seed is not None or not self._seeded:
            self.core.seed([seed if seed is not None else int(self.np_random.integers(2**63))])
            self._seeded = True
        self.core.reset()
        self._needs_reset = False
        return self.core.observation()[0].cpu().numpy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._needs_reset:
            raise gym.error.ResetNeeded("call reset() before step(): no episode is running")
        encoded = self.game.encode_action(self._check_action(action))
        reward, terminated, truncated = self.core.step(encoded)
        done = torch.stack([terminated[0], truncated[0]]).tolist()
        self._needs_reset = done[0] or done[1]
        return self.core.observation()[0].cpu().numpy(), float(reward[0]), done[0], done[1], {}

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() needs render_mode='rgb_array' at construction")
            return None
        return self.core.render()[0]
