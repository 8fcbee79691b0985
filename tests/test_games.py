"""Game specs: frames from the real games, action mappings, exploration policies, missing packages."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch

from dreamgym.games import (
    CARRACING,
    FRAME_SHAPE,
    GAMES,
    TAKECOVER,
    MissingGameError,
    get_game,
    register_game,
    resize_frame,
)

GAME_NAMES = ["takecover", "carracing"]


def test_registry_finds_games_by_name_and_env_id() -> None:
    assert get_game("takecover") is TAKECOVER
    assert get_game("VizdoomTakeCover-v1") is TAKECOVER
    assert get_game("CarRacing-v3") is CARRACING
    with pytest.raises(KeyError, match="unknown game 'pong'"):
        get_game("pong")
    with pytest.raises(ValueError, match="already registered"):
        register_game(TAKECOVER)
    assert set(GAMES) == {"takecover", "carracing"}


@pytest.mark.parametrize("game", GAME_NAMES)
def test_real_env_gives_64x64_uint8_frames_and_stops_at_the_cap(real_env, game: str) -> None:
    spec, env = real_env(game, max_steps=12)
    obs, _ = env.reset(seed=0)
    steer_left = spec.to_game_action(spec.squash_action(-np.ones(spec.controller_outputs)))
    frames, truncated = [], []
    for _ in range(12):
        frame = spec.to_frame(obs)
        assert frame.shape == FRAME_SHAPE and frame.dtype == np.uint8
        frames.append(frame)
        obs, _, terminated, trunc, _ = env.step(steer_left)
        assert not terminated
        truncated.append(trunc)
    assert truncated == [False] * 11 + [True]
    assert frames[0].std() > 5  # a picture, not a blank screen
    assert any(not np.array_equal(frames[0], f) for f in frames[1:])


def test_resize_frame_crops_rows_before_resizing() -> None:
    pixels = np.zeros((96, 96, 3), np.uint8)
    pixels[84:] = 255  # CarRacing's dashboard rows
    assert resize_frame(pixels).max() == 255
    cropped = resize_frame(pixels, crop_rows=84)
    assert cropped.shape == FRAME_SHAPE and cropped.dtype == np.uint8
    assert cropped.max() == 0
    assert np.array_equal(CARRACING.to_frame(pixels), cropped)


def test_takecover_controller_actions_press_the_named_buttons(real_env) -> None:
    spec, env = real_env("takecover", max_steps=10)
    env.reset(seed=0)
    game = env.unwrapped.game
    buttons = [b.name for b in game.get_available_buttons()]
    expected = {0: {"MOVE_LEFT"}, 1: set(), 2: {"MOVE_RIGHT"}}
    for action, pressed in expected.items():
        game_action = spec.to_game_action(action)
        assert env.action_space.contains(game_action)
        env.step(game_action)
        assert {name for name, value in zip(buttons, game.get_last_action(), strict=True) if value} == pressed


def test_takecover_encode_action_is_action_minus_one() -> None:
    for actions in (torch.tensor([0, 1, 2]), torch.tensor([[0], [1], [2]])):
        encoded = TAKECOVER.encode_action(actions)
        assert encoded.dtype == torch.float32 and encoded.shape == (3, TAKECOVER.action_dim)
        assert encoded[:, 0].tolist() == [-1.0, 0.0, 1.0]


def test_carracing_encode_action_keeps_values() -> None:
    actions = torch.tensor([[-0.5, 1.0, 0.0], [0.25, 0.0, 1.0]], dtype=torch.float64)
    encoded = CARRACING.encode_action(actions)
    assert encoded.dtype == torch.float32 and encoded.shape == (2, CARRACING.action_dim)
    assert torch.equal(encoded, actions.float())


def test_takecover_squash_thresholds_at_one_third() -> None:
    x = np.array([-1.0, -0.34, -1 / 3, 0.0, 1 / 3, 0.34, 1.0])[:, None]
    actions = TAKECOVER.squash_action(x)
    assert actions.dtype == np.int64 and actions.shape == (7,)
    assert actions.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert TAKECOVER.squash_action(np.array([0.9])) == 2  # one unbatched output


def test_carracing_squash_maps_tanh_to_steer_gas_brake() -> None:
    x = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [0.5, 0.0, -0.5], [-0.2, 0.5, 0.3]])
    actions = CARRACING.squash_action(x)
    assert actions.dtype == np.float32 and actions.shape == (4, 3)
    np.testing.assert_allclose(actions, [[-1, 0, 0], [1, 1, 1], [0.5, 0.5, 0], [-0.2, 0.75, 0.3]], atol=1e-6)
    assert all(CARRACING.action_space.contains(a) for a in actions)


@pytest.mark.parametrize("game", GAME_NAMES)
def test_squashed_actions_round_trip_to_valid_game_actions(real_env, game: str) -> None:
    """tanh outputs -> controller actions in the spec's space -> actions the raw game accepts."""
    spec, env = real_env(game, max_steps=3)
    x = np.random.default_rng(0).uniform(-1, 1, size=(200, spec.controller_outputs))
    game_actions = set()
    for action in spec.squash_action(x):
        assert spec.action_space.contains(action.astype(spec.action_space.dtype))
        game_action = spec.to_game_action(action)
        assert env.action_space.contains(game_action)
        game_actions.add(np.asarray(game_action).tobytes())
    if game == "takecover":
        assert len(game_actions) == 3  # the mapping is a bijection onto the game's Discrete(3)


def test_carracing_game_action_is_clipped_to_the_box() -> None:
    game_action = CARRACING.to_game_action([-3.0, 2.0, -0.5])
    assert game_action.dtype == np.float32
    assert game_action.tolist() == [-1.0, 1.0, 0.0]


class _RecordingRng:
    """Wraps a Generator and records every ``integers`` draw, to check how a policy uses it."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.draws: list[int] = []

    def integers(self, *args, **kwargs) -> int:
        value = int(self.rng.integers(*args, **kwargs))
        self.draws.append(value)
        return value


def test_takecover_exploration_holds_each_random_action_for_1_to_10_frames() -> None:
    rng = _RecordingRng(0)
    policy = TAKECOVER.exploration(rng)
    frame = np.zeros(FRAME_SHAPE, np.uint8)
    played = [policy(frame) for _ in range(3000)]
    actions, holds = rng.draws[0::2], rng.draws[1::2]
    expected = np.repeat(actions, holds)
    assert played == expected[:3000].tolist()
    assert set(actions) == {0, 1, 2}
    assert set(holds) == set(range(1, 11))


@pytest.mark.parametrize("spec", [TAKECOVER, CARRACING], ids=GAME_NAMES)
def test_exploration_policy_is_a_function_of_its_seed(spec) -> None:
    frames = np.random.default_rng(0).integers(0, 256, size=(50, *FRAME_SHAPE), dtype=np.uint8)

    def play(seed: int) -> np.ndarray:
        policy = spec.exploration(np.random.default_rng(seed))
        return np.stack([np.asarray(policy(f)) for f in frames])

    first = play(1)
    assert all(spec.action_space.contains(a.astype(spec.action_space.dtype)) for a in first)
    assert np.array_equal(first, play(1))
    assert not np.array_equal(first, play(2))


@pytest.mark.parametrize(
    ("spec", "module", "package"),
    [(TAKECOVER, "vizdoom.gymnasium_wrapper", "pip install vizdoom"), (CARRACING, "Box2D", "gymnasium[box2d]")],
    ids=GAME_NAMES,
)
def test_missing_game_package_names_what_to_install(monkeypatch, spec, module: str, package: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(MissingGameError, match=re.escape(package)) as info:
        spec.make_real_env()
    assert isinstance(info.value, ImportError)
    assert spec.package in str(info.value)


@pytest.mark.parametrize("game", GAME_NAMES)
def test_the_real_game_has_one_time_limit_that_can_only_lower_its_cap(game: str) -> None:
    import gymnasium as gym

    def limits(env: gym.Env) -> list[int]:
        found = []
        while isinstance(env, gym.Wrapper):
            if isinstance(env, gym.wrappers.TimeLimit):
                found.append(env._max_episode_steps)
            env = env.env
        return found

    spec = get_game(game)
    assert limits(spec.make_real_env()) == [spec.max_episode_steps]
    assert limits(spec.make_real_env(50)) == [50]
    with pytest.warns(UserWarning, match="above"):
        assert limits(spec.make_real_env(spec.max_episode_steps + 1)) == [spec.max_episode_steps]
