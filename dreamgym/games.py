"""Game specs: everything dreamgym needs to know about one real pixel-observation game.

A :class:`GameSpec` says how to make the real Gymnasium env, how one of its observations becomes a
64x64x3 uint8 frame, which action space the controller sees and how that maps to the game's own
action, how actions are encoded for M, the default model sizes and the random exploration policy used
for data collection. Adding a game is one new ``GameSpec`` passed to :func:`register_game`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from PIL import Image

from dreamgym.experts import TrackExpert

FRAME_SHAPE = (64, 64, 3)
GAME_KEY = "dreamgym_game"
"""The ``metadata`` key of a dreamgym env that names its game spec."""


class MissingGameError(ImportError):
    """The package providing a real game is not installed."""


def resize_frame(pixels: np.ndarray, crop_rows: int | None = None) -> np.ndarray:
    """Crop an (H, W, 3) uint8 image to its first ``crop_rows`` rows and resize it to 64x64x3 uint8."""
    if crop_rows is not None:
        pixels = pixels[:crop_rows]
    return np.array(Image.fromarray(pixels).resize(FRAME_SHAPE[1::-1], Image.Resampling.BILINEAR), dtype=np.uint8)


@dataclass(frozen=True)
class GameSpec:
    """One real game, as seen by the world model and the controller.

    Attributes:
        name: short key used on command lines and in registered ids (``takecover``).
        env_id: Gymnasium id of the real game.
        title: CamelCase name used in dreamgym ids (``TakeCover`` -> ``dreamgym/TakeCoverDream-v0``).
        action_space: the space the controller acts in (the same in the dream and in the real game).
        action_dim: width of the float action encoding fed to M.
        z_size, hidden_size: default latent size of V and LSTM units of M.
        reward_mode: ``survival`` (+1 per surviving step, TakeCover) or ``predicted`` (M's reward head).
        max_episode_steps: step cap of real and dreamed episodes.
        min_episode_steps: exploration episodes shorter than this are discarded and re-drawn.
        restart_flag: whether M gets a "first step of the episode" input, as the paper's TakeCover M.
        package: what to ``pip install`` when the game is missing.
        make_game: builds the raw real env (keyword arguments go to ``gymnasium.make``).
        to_frame: one raw observation -> (64, 64, 3) uint8 frame.
        to_game_action: controller action -> the raw env's action.
        encode_action: (B, ...) controller actions -> (B, action_dim) float32 tensor for M.
        squash_action: (..., action_out) values in [-1, 1] from a tanh controller -> controller actions.
        squash_takes_tensors: ``squash_action`` also maps torch tensors (to tensors on their device), so a
            batched rollout on a GPU never copies its actions to the host; False: it gets numpy arrays only.
        unsquash_action: a right inverse of ``squash_action``: recorded controller actions (N, ...) -> tanh
            outputs (N, action_out) that give them (``agents.imitate`` fits a controller to these); None if the
            game has none.
        controller_outputs: how many tanh outputs the linear controller needs.
        exploration: seeded rng -> a policy ``frame -> action`` for one collection episode.
        dream_temperature: default tau of the dream (TakeCover: the paper's 1.15; CarRacing: 0.1, the
            temperature at which its dream keeps the road and rates controllers close to the real game).
        obs_mode: the paper's controller input for the game (TakeCover: ``zch``; CarRacing: ``zh``), the
            default of the training pipeline.
        explorations: named alternatives to ``exploration`` (``python -m training.collect --exploration NAME``),
            for data that reaches states the default policy rarely does.
        expert: a scripted player reading the raw game's internal state (not its pixels): its own game's env
            (``env.unwrapped``) -> controller action. ``training.collect`` plays it (``--exploration expert``) or
            records its action in the states another policy visits (``--expert-labels``), as demonstrations and
            labels for ``agents.imitate``; None if the game has none.
        replay_game: the raw game stepping its state without drawing observations (they come back None), for
            replays that need only the state, such as ``training.relabel``'s; None: ``make_game``.
    """

    name: str
    env_id: str
    title: str
    action_space: gym.spaces.Space
    action_dim: int
    z_size: int
    hidden_size: int
    reward_mode: Literal["survival", "predicted"]
    max_episode_steps: int
    min_episode_steps: int
    restart_flag: bool
    package: str
    make_game: Callable[..., gym.Env]
    to_frame: Callable[[Any], np.ndarray]
    to_game_action: Callable[[Any], Any]
    encode_action: Callable[[torch.Tensor], torch.Tensor]
    squash_action: Callable[[np.ndarray], np.ndarray]
    controller_outputs: int
    exploration: Callable[[np.random.Generator], Callable[[np.ndarray], Any]]
    render_fps: int = field(default=30)
    dream_temperature: float = 1.0
    obs_mode: Literal["zh", "zch", "z"] = "zh"
    squash_takes_tensors: bool = False
    unsquash_action: Callable[[np.ndarray], np.ndarray] | None = None
    explorations: Mapping[str, Callable[[np.random.Generator], Callable[[np.ndarray], Any]]] = field(
        default_factory=dict
    )
    expert: Callable[[gym.Env], np.ndarray] | None = None
    replay_game: Callable[..., gym.Env] | None = None

    def make_real_env(self, max_episode_steps: int | None = None, **kwargs: Any) -> gym.Env:
        """The real game under one ``TimeLimit``: the spec's cap, or ``max_episode_steps`` if lower (the cap is the
        game's; a larger value is cut to it, with a warning). A ``TimeLimit`` the game's own registration put
        outermost is replaced, not stacked."""
        env = self.make_game(**kwargs)
        if isinstance(env, gym.wrappers.TimeLimit):
            env = env.env
        limit = self.max_episode_steps if max_episode_steps is None else self.capped(max_episode_steps)
        return gym.wrappers.TimeLimit(env, max_episode_steps=limit)

    def capped(self, max_episode_steps: int) -> int:
        """``max_episode_steps``, cut to the game's cap (with a warning) where it is above: the real game's
        episodes end there, and so do its dreams."""
        if max_episode_steps > self.max_episode_steps:
            gym.logger.warn(f"max_episode_steps={max_episode_steps} is above {self.name}'s cap: episodes end after "
                            f"{self.max_episode_steps} steps, as the real game's do")  # fmt: skip
            return self.max_episode_steps
        return max_episode_steps

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        """Pickles as its name (its functions may be lambdas): unpickling looks the spec up with :func:`get_game`,
        so a game of your own must be registered, or importable by that name, where it is unpickled."""
        return get_game, (self.name,)


# --- VizDoom TakeCover --------------------------------------------------------------------------
# The controller sees Discrete(3): 0 = move left, 1 = stay, 2 = move right (M gets a-1 in {-1, 0, 1},
# as in the paper). VizDoom's Discrete(3) for TakeCover is 0 = no-op, 1 = MOVE_RIGHT, 2 = MOVE_LEFT.
_TAKECOVER_TO_GAME = (2, 0, 1)


def _make_takecover(**kwargs: Any) -> gym.Env:
    try:
        import vizdoom.gymnasium_wrapper  # noqa: F401  (registers the Vizdoom ids)
    except ImportError as err:
        raise MissingGameError("VizdoomTakeCover-v1 needs the 'vizdoom' package: pip install vizdoom") from err
    # The engine creates ./_vizdoom/ at start; two engines starting at once in a folder without it race,
    # and the loser dies ("Failed to create ./_vizdoom/ directory: File exists"), taking its worker along.
    Path("_vizdoom").mkdir(exist_ok=True)
    return gym.make("VizdoomTakeCover-v1", **kwargs)


def _takecover_frame(obs: dict[str, np.ndarray]) -> np.ndarray:
    return resize_frame(obs["screen"])


def _takecover_encode(actions: torch.Tensor) -> torch.Tensor:
    return actions.reshape(-1, 1).to(torch.float32) - 1.0


def numpy_or_tensor(squash: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Any], Any]:
    """A ``squash_action`` written on torch tensors that also takes numpy arrays (and then returns one)."""

    @functools.wraps(squash)
    def either(x: Any) -> Any:
        return squash(x) if isinstance(x, torch.Tensor) else squash(torch.from_numpy(np.array(x))).numpy()

    return either


@numpy_or_tensor
def _takecover_squash(x: torch.Tensor) -> torch.Tensor:
    """Thresholds a tanh output at +-1/3: left / stay / right, as in the paper's controller."""
    x = x[..., 0]
    return torch.where(x < -1 / 3, 0, torch.where(x > 1 / 3, 2, 1)).to(torch.int64)


def _takecover_unsquash(actions: np.ndarray) -> np.ndarray:
    """left / stay / right -> -1, 0, 1 (the middle of each threshold band, as far as tanh reaches)."""
    return np.asarray(actions, np.float32).reshape(-1, 1) - 1.0


def _held_random_actions(rng: np.random.Generator) -> Callable[[np.ndarray], int]:
    """Random action held for 1-10 frames (the paper's TakeCover exploration policy)."""
    state = {"action": 1, "left": 0}

    def act(frame: np.ndarray) -> int:
        if state["left"] == 0:
            state["action"] = int(rng.integers(3))
            state["left"] = int(rng.integers(1, 11))
        state["left"] -= 1
        return state["action"]

    return act


def _long_held_actions(rng: np.random.Generator) -> Callable[[np.ndarray], int]:
    """Random action held for 1-10 frames half the time, else for 20-200 frames.

    The paper's policy random-walks around the middle of the room; a dream-trained controller that holds
    one action sits against a wall, where that data has almost no frames. This policy goes there and stays.
    """
    state = {"action": 1, "left": 0}

    def act(frame: np.ndarray) -> int:
        if state["left"] == 0:
            state["action"] = int(rng.integers(3))
            state["left"] = int(rng.integers(1, 11) if rng.random() < 0.5 else rng.integers(20, 201))
        state["left"] -= 1
        return state["action"]

    return act


TAKECOVER = GameSpec(
    name="takecover",
    env_id="VizdoomTakeCover-v1",
    title="TakeCover",
    action_space=gym.spaces.Discrete(3),
    action_dim=1,
    z_size=64,
    hidden_size=512,
    reward_mode="survival",
    max_episode_steps=2100,
    min_episode_steps=100,
    restart_flag=True,
    package="vizdoom",
    make_game=_make_takecover,
    to_frame=_takecover_frame,
    to_game_action=lambda a: _TAKECOVER_TO_GAME[int(a)],
    encode_action=_takecover_encode,
    squash_action=_takecover_squash,
    squash_takes_tensors=True,
    unsquash_action=_takecover_unsquash,
    controller_outputs=1,
    exploration=_held_random_actions,
    render_fps=35,
    dream_temperature=1.15,
    obs_mode="zch",
    explorations={"long-holds": _long_held_actions},
)


# --- Box2D CarRacing ----------------------------------------------------------------------------
_CARRACING_SPACE = gym.spaces.Box(np.array([-1.0, 0.0, 0.0], np.float32), np.array([1.0, 1.0, 1.0], np.float32))


def _make_carracing(**kwargs: Any) -> gym.Env:
    try:
        import Box2D  # noqa: F401
    except ImportError as err:
        raise MissingGameError("CarRacing-v3 needs Box2D: pip install 'gymnasium[box2d]'") from err
    return gym.make("CarRacing-v3", **kwargs)


def _make_carracing_undrawn(**kwargs: Any) -> gym.Env:
    """CarRacing-v3 whose steps skip drawing the 96x96 observation (most of a step's time; the physics and
    rewards are unchanged, observations are None)."""
    env = _make_carracing(disable_env_checker=True, **kwargs)
    game = env.unwrapped
    draw = game._render  # type: ignore[attr-defined]
    game._render = lambda mode, *args, **kw: None if mode == "state_pixels" else draw(mode, *args, **kw)  # type: ignore[attr-defined]
    return env


@numpy_or_tensor
def _carracing_squash(x: torch.Tensor) -> torch.Tensor:
    """tanh outputs -> steer in [-1, 1], gas (x+1)/2, brake clipped to [0, 1] (the paper's mapping)."""
    x = x.to(torch.float32)
    return torch.stack([x[..., 0], (x[..., 1] + 1.0) / 2.0, x[..., 2].clamp(0.0, 1.0)], dim=-1)


def _carracing_unsquash(actions: np.ndarray) -> np.ndarray:
    """steer, gas, brake -> tanh outputs: steer, 2 gas - 1, and brake, except that no brake is -1 (firmly off)."""
    a = np.asarray(actions, np.float32).reshape(-1, 3)
    return np.stack([a[:, 0], 2.0 * a[:, 1] - 1.0, np.where(a[:, 2] > 0, a[:, 2], -1.0)], axis=-1).astype(np.float32)


def _random_linear_controller(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """A linear controller with random weights per episode on an 8x8 grey thumbnail of the frame.

    The paper's CarRacing data came from random-weight controllers acting on features of the frame,
    giving each episode its own driving style; the thumbnail stands in for an untrained V. The brake's
    bias is negative so that most episodes move (a braking car shows one frame for 1,000 steps).
    """
    scale = rng.uniform(0.05, 0.5)
    weights = rng.normal(0.0, scale, size=(3, 64)).astype(np.float32)
    bias = np.array([rng.normal(0.0, 0.5), rng.normal(0.0, 0.5), rng.normal(-1.5, 0.5)], np.float32)

    def act(frame: np.ndarray) -> np.ndarray:
        grey = frame.reshape(8, 8, 8, 8, 3).mean(axis=(1, 3, 4)).reshape(-1) / 255.0 - 0.5
        return _carracing_squash(np.tanh(weights @ grey * 8.0 + bias))

    return act


def road_mask(frame: np.ndarray) -> np.ndarray:
    """(H, W) bool: the grey road pixels of a 64x64 CarRacing frame (grass is green, the car red)."""
    rgb = frame.astype(np.int16)
    return (np.abs(rgb[..., 1] - rgb[..., 0]) < 25) & (rgb[..., 0] > 80) & (rgb[..., 0] < 140)


def _road_follower(
    rng: np.random.Generator, gain: float, gas: float, noise: float, excursion_rate: float
) -> Callable[[np.ndarray], np.ndarray]:
    """Steers toward the centre of the road pixels in the rows ahead of the car, smoothed, with steering
    noise, per-step throttle jitter (gas x U(0.5, 1.5)) and, at ``excursion_rate`` per step, a 10-60 frame
    excursion to a random steering angle."""
    state = {"steer": 0.0, "last": 0.0, "left": 0, "away": 0.0}

    def act(frame: np.ndarray) -> np.ndarray:
        road = road_mask(frame[20:52])
        if road.any():
            centre = float((road.sum(axis=0) * np.arange(road.shape[1])).sum() / road.sum())
            state["last"] = float(np.clip(gain * (centre - 32.0) / 16.0, -1.0, 1.0))
        if state["left"] == 0 and rng.random() < excursion_rate:
            state["left"], state["away"] = int(rng.integers(10, 61)), float(rng.uniform(-1.0, 1.0))
        target = state["away"] if state["left"] > 0 else state["last"]
        state["left"] = max(state["left"] - 1, 0)
        state["steer"] = 0.7 * state["steer"] + 0.3 * (target + noise * rng.normal())
        throttle = gas * rng.uniform(0.5, 1.5)
        return np.array([np.clip(state["steer"], -1.0, 1.0), throttle, 0.0], np.float32)

    return act


def _noisy_road_follower(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """The road follower with per-episode gain, speed and noise, and random excursions.

    Random driving leaves the road within a few dozen frames, so its data has almost no corners, speed or
    tile rewards: exactly what a dream-trained controller needs M to know. This crude follower drives
    slowly along the track, loses it at sharp corners and now and then steers away for 10-60 frames, so
    the data holds driving on the road, leaving it and coming back, each at its own style.
    """
    gain, gas, noise = rng.uniform(1.0, 3.0), rng.uniform(0.05, 0.3), rng.uniform(0.0, 0.3)
    return _road_follower(rng, gain, gas, noise, excursion_rate=rng.uniform(0.0, 0.02))


def _steady_road_follower(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """The road follower at its best settings (gain 1.2-2, gas 0.06-0.12, little noise, no excursions).

    Its episodes are demonstrations for ``agents.imitate`` and data of clean, complete laps for M
    (docs/carracing.md has its scores).
    """
    gain, gas, noise = rng.uniform(1.2, 2.0), rng.uniform(0.06, 0.12), rng.uniform(0.0, 0.1)
    return _road_follower(rng, gain, gas, noise, excursion_rate=0.0)


def _carracing_exploration(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """Per episode: the noisy road follower (70 %) or a random linear controller (30 %)."""
    return _noisy_road_follower(rng) if rng.random() < 0.7 else _random_linear_controller(rng)


CARRACING = GameSpec(
    name="carracing",
    env_id="CarRacing-v3",
    title="CarRacing",
    action_space=_CARRACING_SPACE,
    action_dim=3,
    z_size=32,
    hidden_size=256,
    reward_mode="predicted",
    max_episode_steps=1000,
    min_episode_steps=0,
    restart_flag=False,
    package="gymnasium[box2d]",
    make_game=_make_carracing,
    to_frame=lambda obs: resize_frame(obs, crop_rows=84),
    to_game_action=lambda a: np.clip(np.asarray(a, dtype=np.float32), _CARRACING_SPACE.low, _CARRACING_SPACE.high),
    encode_action=lambda a: a.reshape(-1, 3).to(torch.float32),
    squash_action=_carracing_squash,
    squash_takes_tensors=True,
    unsquash_action=_carracing_unsquash,
    controller_outputs=3,
    exploration=_carracing_exploration,
    render_fps=50,
    # M samples each of z's 32 dims on its own: at tau 1 the dreamed road dissolves within ~20 steps even with
    # the real actions replayed, at 0.1 it stays (docs/carracing.md).
    dream_temperature=0.1,
    explorations={
        "random-linear": _random_linear_controller,
        "road-follower": _noisy_road_follower,
        "steady-follower": _steady_road_follower,
    },
    expert=TrackExpert(),
    replay_game=_make_carracing_undrawn,
)


GAMES: dict[str, GameSpec] = {}


def register_game(spec: GameSpec) -> GameSpec:
    """Adds a game to the registry (its ``name`` must be new)."""
    if spec.name in GAMES:
        raise ValueError(f"game {spec.name!r} is already registered")
    GAMES[spec.name] = spec
    return spec


GAMES_GROUP = "dreamgym.games"
"""entry-point group in which installed packages declare their games (``name = "package.module:SPEC"``)"""


def get_game(name: str) -> GameSpec:
    """The spec registered under ``name``: a short name like ``takecover``, the real env id, an import path
    ``package.module:attribute`` naming a :class:`GameSpec`, or a name an installed package declares in the
    ``dreamgym.games`` entry-point group. The last two are loaded and registered (with their Gymnasium ids) on
    first use; a command line's ``--game`` string reaches worker processes as is, so they load it too."""
    for spec in GAMES.values():
        if name in (spec.name, spec.env_id):
            return spec
    loaded = _load_game(name)
    if loaded is None:
        raise KeyError(f"unknown game {name!r}; known: {sorted(GAMES)}, an import path 'package.module:SPEC' "
                       f"or a name in the {GAMES_GROUP!r} entry-point group")  # fmt: skip
    from dreamgym.envs.registration import register_game_envs  # here: the envs package imports this module

    register_game_envs(loaded)
    return loaded


def _load_game(name: str) -> GameSpec | None:
    """The spec an import path or an installed entry point names; None if neither names one. A spec its module
    did not register is registered under ``name``, so that the name alone (in a world model's config, say) finds
    it again in any process."""
    if ":" in name:
        module, _, attribute = name.partition(":")
        found = getattr(importlib.import_module(module), attribute)
    else:
        points = [point for point in entry_points(group=GAMES_GROUP) if point.name == name]
        if not points:
            return None
        found = points[0].load()
    if not isinstance(found, GameSpec):
        raise TypeError(f"game {name!r} names a {type(found).__name__}, not a GameSpec")
    if GAMES.get(found.name) is found:  # its module registered it on import: the short name works wherever
        return found  # that module is imported
    return register_game(dataclasses.replace(found, name=name))


register_game(TAKECOVER)
register_game(CARRACING)
