"""The World Models controller C: ``action = squash(tanh(W · obs + b))``, one or a whole population at once.

The paper's C is that linear map. ``hidden > 0`` puts one tanh layer of that width in front of it
(``tanh(W · tanh(W_h · obs + b_h) + b)``), for when a linear map of ``[z, h]`` cannot copy a teacher
(``agents.imitate --hidden``); everything below (CMA-ES, the envs, save/load) treats both alike.

A :class:`ControllerConfig` fixes the sizes and the action mapping. On a dreamgym env (its
``metadata["dreamgym_game"]`` names a game spec) the tanh outputs go through the spec's
``squash_action`` (TakeCover: one output thresholded at ±1/3; CarRacing: steer, (x+1)/2 gas, clipped
brake). On any other env the mapping comes from the action space: Box scales [-1, 1] into its bounds,
Discrete(n) takes the argmax of n outputs.

Parameters are a flat vector ``[W.ravel(), b]`` with W of shape (A, D) (with a hidden layer
``[W_h.ravel(), b_h, W.ravel(), b]``, W_h (H, D), W (A, H)), so a population is a (P, n) tensor and
:func:`population_outputs` computes all P·E actions of a generation with one einsum per layer. On disk a
controller is ``controller.safetensors`` (``weight``, ``bias``, and ``hidden.weight``, ``hidden.bias``
with a hidden layer) plus ``controller.json`` (config, spaces, env id, provenance, versions). Loading checks
both files against a ``SHA256SUMS`` in the controller's folder, or in the shipped game folder above its
``controllers/`` folder, every config field, and every tensor's shape, dtype (float32) and finiteness.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from dreamgym.checkpoint import (
    CheckpointError,
    check_number,
    config_from_json,
    load_json,
    load_tensors,
    save_json,
    save_tensors,
    verify_listed,
    versions,
)
from dreamgym.games import GAME_KEY, get_game

LINEAR_ARCHITECTURE = "dreamgym.LinearController/v1"
MLP_ARCHITECTURE = "dreamgym.MLPController/v1"
"""Architecture tag of controllers with a hidden layer (linear ones keep the tag older versions read)."""
SKIP_ARCHITECTURE = "dreamgym.MLPSkipController/v1"
"""Architecture tag of controllers with a hidden layer and a linear map beside it."""
ARCHITECTURES = (LINEAR_ARCHITECTURE, MLP_ARCHITECTURE, SKIP_ARCHITECTURE)
CONFIG_FILE = "controller.json"
WEIGHTS_FILE = "controller.safetensors"
CONTROLLERS_DIR = "controllers"
"""Folder of a shipped game's controllers; the game folder's ``SHA256SUMS`` covers them."""

# The paper's TakeCover controller has no bias (1,088 parameters); CarRacing's has one (867).
_PAPER_BIAS = {"takecover": False}


def space_to_json(space: gym.spaces.Space) -> dict[str, Any]:
    """A JSON description of a Box or Discrete space, exact enough to detect a mismatched env."""
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "low": space.low.ravel().tolist(),
            "high": space.high.ravel().tolist(),
        }
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    raise TypeError(f"the controller supports Box and Discrete action spaces, not {space}")


def check_action_space_json(space: dict[str, Any]) -> None:
    """Raises ValueError unless ``space`` is what :func:`space_to_json` writes for a Box or Discrete space."""
    if space.get("type") == "Discrete":
        check_number("action_space.n", space.get("n"), 1, integer=True)
        check_number("action_space.start", space.get("start"), -math.inf, integer=True)
        return
    if space.get("type") != "Box":
        raise ValueError(f"action_space.type must be 'Box' or 'Discrete', got {space.get('type')!r}")
    shape = space.get("shape")
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
        raise ValueError(f"action_space.shape must be a list of positive integers, got {shape!r}")
    for bound in ("low", "high"):
        values = space.get(bound)
        if not isinstance(values, list) or len(values) != math.prod(shape):
            raise ValueError(f"action_space.{bound} must be a list of {math.prod(shape)} numbers, got {values!r}")
        for value in values:
            check_number(f"action_space.{bound}", value, -math.inf)


def env_spaces(env: gym.Env | gym.vector.VectorEnv) -> tuple[gym.spaces.Space, gym.spaces.Space]:
    """(observation space, action space) of one sub-env, for a single env or a VectorEnv."""
    if isinstance(env, gym.vector.VectorEnv):
        return env.single_observation_space, env.single_action_space
    return env.observation_space, env.action_space


@dataclass(frozen=True)
class ControllerConfig:
    """Sizes and action mapping of a controller.

    Attributes:
        obs_dim: D, length of the flattened observation.
        action_out: A, number of tanh outputs.
        bias: whether the controller has a bias b (A,).
        action_space: :func:`space_to_json` of the env's action space.
        game: dreamgym game spec name whose ``squash_action`` maps outputs, or None for the generic mapping.
        env_id: the env the controller was made for (informative; any env with the same spaces fits).
        hidden: H, width of the tanh hidden layer; 0 is the paper's linear controller.
        skip: with a hidden layer, also a linear map S (A, D) of the observation added before the output tanh:
            tanh(W tanh(W_h obs + b_h) + S obs + b), so some outputs can be linear and others not.
    """

    obs_dim: int
    action_out: int
    bias: bool
    action_space: dict[str, Any]
    game: str | None = None
    env_id: str | None = None
    hidden: int = 0
    skip: bool = False

    def __post_init__(self) -> None:
        check_number("obs_dim", self.obs_dim, 1, integer=True)
        check_number("action_out", self.action_out, 1, integer=True)
        check_number("hidden", self.hidden, 0, integer=True)
        check_action_space_json(self.action_space)
        if self.skip and not self.hidden:
            raise ValueError("skip (a linear map beside the hidden layer) needs hidden > 0")

    @property
    def architecture(self) -> str:
        if not self.hidden:
            return LINEAR_ARCHITECTURE
        return SKIP_ARCHITECTURE if self.skip else MLP_ARCHITECTURE

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of each tensor, in the order of the flat parameter vector."""
        layers = (
            [("hidden.", self.hidden, self.obs_dim), ("", self.action_out, self.hidden)]
            if self.hidden
            else [("", self.action_out, self.obs_dim)]
        )
        shapes: dict[str, tuple[int, ...]] = {}
        for prefix, out, inp in layers:
            shapes[f"{prefix}weight"] = (out, inp)
            if self.bias:
                shapes[f"{prefix}bias"] = (out,)
        if self.skip:
            shapes["skip.weight"] = (self.action_out, self.obs_dim)
        return shapes

    def param_slices(self) -> dict[str, slice]:
        """Name -> where each tensor of :meth:`param_shapes` lies in the flat parameter vector."""
        slices, start = {}, 0
        for name, shape in self.param_shapes().items():
            slices[name] = slice(start, start + math.prod(shape))
            start += math.prod(shape)
        return slices

    @property
    def n_params(self) -> int:
        return sum(math.prod(shape) for shape in self.param_shapes().values())

    @classmethod
    def for_env(
        cls,
        env: gym.Env | gym.vector.VectorEnv,
        env_id: str | None = None,
        bias: bool | None = None,
        hidden: int = 0,
        skip: bool = False,
    ) -> ControllerConfig:
        """The config fitting ``env``; ``bias=None`` takes the paper's choice for the game (default True)."""
        obs_space, action_space = env_spaces(env)
        if not isinstance(obs_space, gym.spaces.Box):
            raise TypeError(f"the controller needs a Box observation space, got {obs_space}")
        game = env.metadata.get(GAME_KEY)
        if game is not None:
            outputs = get_game(game).controller_outputs
        elif isinstance(action_space, gym.spaces.Discrete):
            outputs = int(action_space.n)
        else:
            outputs = int(np.prod(space_to_json(action_space)["shape"]))  # a TypeError unless a Box
            assert isinstance(action_space, gym.spaces.Box)
            if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
                raise ValueError(f"cannot scale tanh outputs into the unbounded action space {action_space}")
        if bias is None:
            bias = _PAPER_BIAS.get(game, True) if game is not None else True
        return cls(
            int(np.prod(obs_space.shape)), outputs, bias, space_to_json(action_space), game, env_id, hidden, skip
        )

    def check_env(self, env: gym.Env | gym.vector.VectorEnv, what: str = "controller") -> None:
        """Raises ValueError naming the difference when ``env`` does not fit this controller."""
        obs_space, action_space = env_spaces(env)
        if obs_space.shape is None:
            raise TypeError(f"the {what} needs observations of a fixed shape, got {obs_space}")
        obs_dim = int(np.prod(obs_space.shape))
        game = env.metadata.get(GAME_KEY)
        problems = []
        if obs_dim != self.obs_dim:
            problems.append(
                f"observations of size {obs_dim}, the {what} expects {self.obs_dim} "
                "(a different obs_mode or world model?)"
            )
        if space_to_json(action_space) != self.action_space:
            problems.append(f"action space {action_space}, the {what} expects {self.action_space}")
        if game != self.game:
            problems.append(f"game {game!r}, the {what} was made for {self.game!r}")
        if problems:
            raise ValueError(f"{what} (made for {self.env_id}) does not fit this env: " + "; ".join(problems))


def squash_outputs(config: ControllerConfig, y: Any) -> Any:
    """(N, A) tanh outputs in [-1, 1] -> (N, ...) actions of the env's action space.

    A numpy array gives numpy actions. A tensor gives tensor actions on its device, computed there, when the
    squash can (a game's whose ``squash_takes_tensors``, or a plain Discrete / Box space); otherwise numpy ones.
    """
    if config.game is not None:
        game = get_game(config.game)
        if isinstance(y, torch.Tensor) and not game.squash_takes_tensors:
            y = y.cpu().numpy()
        return game.squash_action(y)
    if not isinstance(y, torch.Tensor):
        return squash_outputs(config, torch.from_numpy(np.asarray(y))).numpy()
    space = config.action_space
    if space["type"] == "Discrete":
        return y.argmax(dim=-1) + int(space["start"])
    low = torch.tensor(space["low"], dtype=torch.float32, device=y.device)
    high = torch.tensor(space["high"], dtype=torch.float32, device=y.device)
    scaled = low + (y.to(torch.float32) + 1.0) / 2.0 * (high - low)
    return scaled.reshape(len(y), *space["shape"])


def unflatten(config: ControllerConfig, params: torch.Tensor) -> dict[str, torch.Tensor]:
    """Flat parameters (P, n) -> each tensor of :meth:`ControllerConfig.param_shapes`, batched (P, *shape)."""
    shapes = config.param_shapes()
    return {name: params[:, where].reshape(len(params), *shapes[name]) for name, where in config.param_slices().items()}


def flatten(config: ControllerConfig, tensors: dict[str, torch.Tensor]) -> np.ndarray:
    """The inverse of :func:`unflatten` for one controller: named tensors -> flat float32 parameters (n,)."""
    return torch.cat([tensors[name].reshape(-1) for name in config.param_shapes()]).to(torch.float32).numpy()


def population_outputs(config: ControllerConfig, params: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    """tanh(W_p · obs_pe + b_p) (or through the hidden layer): params (P, n), obs (P, E, D) -> outputs (P, E, A).

    Candidate p acts in its E envs with its own parameters; one einsum per layer serves the whole population.
    """
    P, D = params.shape[0], config.obs_dim
    if params.shape != (P, config.n_params) or obs.shape[0] != P or obs.shape[-1] != D:
        raise ValueError(
            f"expected params (P, {config.n_params}) and obs (P, E, {D}); "
            f"got {tuple(params.shape)} and {tuple(obs.shape)}"
        )
    tensors = unflatten(config, params)

    def affine(prefix: str, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("pad,ped->pea", tensors[f"{prefix}weight"], x)
        return y + tensors[f"{prefix}bias"].unsqueeze(1) if config.bias else y

    if not config.hidden:
        return torch.tanh(affine("", obs))
    y = affine("", torch.tanh(affine("hidden.", obs)))
    if config.skip:
        y = y + torch.einsum("pad,ped->pea", tensors["skip.weight"], obs)
    return torch.tanh(y)


def population_actions(config: ControllerConfig, params: torch.Tensor, obs: Any, episodes: int) -> Any:
    """Actions of P candidates in P·E envs: params (P, n), obs (P·E, ...) -> (P·E, ...).

    Numpy observations give numpy actions; torch observations give tensor actions on ``params``' device where
    :func:`squash_outputs` can make them there, so a rollout on a GPU reads nothing back to the host.
    """
    obs_t = torch.as_tensor(obs, dtype=params.dtype, device=params.device).reshape(len(params), episodes, -1)
    y = population_outputs(config, params, obs_t).reshape(-1, config.action_out)
    return squash_outputs(config, y if isinstance(obs, torch.Tensor) else y.cpu().numpy())


class Controller:
    """One controller: a config and its flat parameter vector (n,) float32."""

    def __init__(self, config: ControllerConfig, params: np.ndarray | torch.Tensor | None = None) -> None:
        flat = np.zeros(config.n_params, np.float32) if params is None else np.asarray(params, np.float32)
        if flat.shape != (config.n_params,):
            raise ValueError(f"controller needs {config.n_params} parameters, got shape {flat.shape}")
        self.config = config
        self.params = flat

    def tensors(self) -> dict[str, np.ndarray]:
        """Name -> array of each weight and bias (views into the flat parameters)."""
        return {k: v[0].numpy() for k, v in unflatten(self.config, torch.from_numpy(self.params)[None]).items()}

    @property
    def weight(self) -> np.ndarray:
        """W (A, D), or (A, H) behind a hidden layer."""
        return self.tensors()["weight"]

    @property
    def bias(self) -> np.ndarray | None:
        """b (A,) or None."""
        return self.tensors()["bias"] if self.config.bias else None

    def act(self, obs: np.ndarray) -> Any:
        """The action for one observation (D,) (any shape with D elements)."""
        params = torch.from_numpy(self.params)[None]
        return population_actions(self.config, params, np.asarray(obs)[None], 1)[0]

    def save(self, folder: str | os.PathLike, provenance: dict[str, Any] | None = None) -> Path:
        """Writes ``controller.safetensors`` + ``controller.json`` into ``folder`` (atomically, each)."""
        folder = Path(folder)
        save_tensors(folder / WEIGHTS_FILE, {k: torch.from_numpy(v.copy()) for k, v in self.tensors().items()})
        config = dataclasses.asdict(self.config)
        if not self.config.skip:
            del config["skip"]  # files without a skip map stay readable by versions without it
        if not self.config.hidden:
            del config["hidden"]  # a linear controller's files stay readable by versions without hidden layers
        save_json(
            folder / CONFIG_FILE,
            {
                "architecture": self.config.architecture,
                "config": config,
                "provenance": provenance or {},
                "versions": versions(),
            },
        )
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, env: gym.Env | gym.vector.VectorEnv | None = None) -> Controller:
        """Loads a saved controller; with ``env``, fails clearly unless its spaces and game fit."""
        folder = Path(folder)
        files = [folder / CONFIG_FILE, folder / WEIGHTS_FILE]
        verify_listed(folder, files)
        if folder.parent.name == CONTROLLERS_DIR:
            verify_listed(folder.parent.parent, files)
        meta = load_json(folder / CONFIG_FILE)
        architecture = meta.get("architecture")
        if architecture not in ARCHITECTURES:
            raise CheckpointError(f"{folder / CONFIG_FILE}: checkpoint is for architecture {architecture!r}, expected "
                                  f"a controller (one of {', '.join(map(repr, ARCHITECTURES))})")  # fmt: skip
        config = config_from_json(ControllerConfig, meta.get("config"), folder / CONFIG_FILE, "config")
        if architecture != config.architecture:
            raise CheckpointError(f"{folder / CONFIG_FILE}: architecture {architecture!r} with hidden={config.hidden}"
                                  f", skip={config.skip} (expected {config.architecture!r})")  # fmt: skip
        tensors = load_tensors(folder / WEIGHTS_FILE, dtype=torch.float32)
        expected = config.param_shapes()
        found = {k: tuple(v.shape) for k, v in tensors.items()}
        if found != expected:
            raise CheckpointError(f"{folder / WEIGHTS_FILE}: tensors {found} do not match the config {expected}")
        controller = cls(config, flatten(config, tensors))
        if env is not None:
            config.check_env(env, f"controller {folder}")
        return controller
