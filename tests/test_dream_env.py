"""The single dream env: Gymnasium's checker, the dream's rules (observation, reward, done, cap), seeding, errors."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import TINY_HIDDEN, TINY_Z, make_tiny_world_model
from gymnasium.utils.env_checker import check_env

import dreamgym  # noqa: F401  (registers the ids)
from dreamgym.envs import DreamEnv
from dreamgym.world_model import WorldModel


def with_done_probability(model: WorldModel, p: float) -> WorldModel:
    """Makes M's calibrated done probability exactly ``p`` at every step (p = 0: never done)."""
    done = model.mdnrnn.done
    with torch.no_grad():
        done.weight.zero_()
        logit = -60.0 if p == 0 else math.log(p / (1 - p))
        done.bias.fill_(logit + math.log(model.config.mdnrnn.done_pos_weight))
    return model


def play(env: gym.Env, actions: list, seed: int | None) -> list[tuple]:
    """(obs, reward, terminated, truncated) of every step, resetting (unseeded) after each episode end."""
    obs, _ = env.reset(seed=seed)
    out = [(obs, 0.0, False, False)]
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        out.append((obs, reward, terminated, truncated))
        if terminated or truncated:
            out.append((env.reset()[0], 0.0, False, False))
    return out


@pytest.mark.parametrize("game", ["takecover", "carracing"])
def test_gymnasium_check_env_passes(game: str, tiny_bundle) -> None:
    check_env(DreamEnv(make_tiny_world_model(game), render_mode="rgb_array"), skip_render_check=False)
    made = gym.make(f"dreamgym/{get_title(game)}Dream-v0", world_model=tiny_bundle(game), render_mode="rgb_array")
    assert isinstance(made.unwrapped, DreamEnv)
    check_env(made.unwrapped, skip_render_check=False)


def get_title(game: str) -> str:
    return dreamgym.get_game(game).title


@pytest.mark.parametrize(
    "obs_mode,size", [("zh", TINY_Z + TINY_HIDDEN), ("zch", TINY_Z + 2 * TINY_HIDDEN), ("z", TINY_Z)]
)
def test_observation_is_z_then_lstm_state_zero_at_reset(obs_mode: str, size: int) -> None:
    env = DreamEnv(make_tiny_world_model(), obs_mode=obs_mode)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (size,) == env.observation_space.shape and obs.dtype == np.float32
    assert np.all(obs[TINY_Z:] == 0) and np.any(obs[:TINY_Z] != 0)
    obs, *_ = env.step(1)
    assert obs_mode == "z" or np.any(obs[TINY_Z:] != 0)
    assert env.metadata["dreamgym_game"] == "takecover"


def test_same_seed_same_episodes_other_seed_differs() -> None:
    model = make_tiny_world_model()
    actions = list(np.random.default_rng(0).integers(3, size=40))
    a = play(DreamEnv(model), actions, seed=7)
    b = play(DreamEnv(model), actions, seed=7)
    c = play(DreamEnv(model), actions, seed=8)
    assert sum(t[2] for t in a) >= 2, "the tiny dream should end a few episodes in 40 steps"
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:] == y[1:]
    assert not np.array_equal(a[0][0], c[0][0])


def test_unseeded_reset_continues_the_seeded_stream() -> None:
    model = make_tiny_world_model()
    first, second = DreamEnv(model), DreamEnv(model)
    obs_a = [first.reset(seed=3)[0], first.reset()[0], first.reset()[0]]
    obs_b = [second.reset(seed=3)[0], second.reset()[0], second.reset()[0]]
    np.testing.assert_array_equal(np.stack(obs_a), np.stack(obs_b))
    assert not np.array_equal(obs_a[0], obs_a[1])


def test_survival_reward_is_one_per_step_including_the_terminal_one() -> None:
    env = DreamEnv(make_tiny_world_model())
    env.reset(seed=1)
    rewards, done = [], False
    while not done:
        _, reward, terminated, truncated, _ = env.step(0)
        rewards.append(reward)
        done = terminated or truncated
    assert terminated and rewards == [1.0] * len(rewards)


def test_predicted_reward_is_m_reward_head_on_the_new_state() -> None:
    model = make_tiny_world_model("carracing")
    env = DreamEnv(model, max_episode_steps=10)
    env.reset(seed=2)
    for _ in range(5):
        obs, reward, terminated, truncated, _ = env.step(np.array([0.3, 0.5, 0.0], np.float32))
        h = torch.as_tensor(obs[TINY_Z:])[None]
        assert reward == pytest.approx(model.mdnrnn.reward(h).item(), abs=1e-5)
        if terminated:
            break


def test_truncates_at_the_game_step_cap() -> None:
    env = DreamEnv(with_done_probability(make_tiny_world_model(), 0.0))
    env.reset(seed=0)
    for step in range(1, 2101):
        _, reward, terminated, truncated, _ = env.step(1)
        assert not terminated and truncated == (step == 2100) and reward == 1.0
    short = DreamEnv(with_done_probability(make_tiny_world_model(), 0.0), max_episode_steps=3)
    short.reset(seed=0)
    assert [short.step(1)[3] for _ in range(3)] == [False, False, True]


def test_dreams_started_later_in_the_episode_last_its_remaining_steps(tmp_path: Path) -> None:
    """A bundle whose initial latents are frame k of real episodes dreams the cap minus k steps, and says so
    in its config (old bundles without the key start at frame 0)."""
    model = with_done_probability(make_tiny_world_model(), 0.0)
    model.initial_step = 2000
    model.save(tmp_path / "late")
    env = DreamEnv(WorldModel.load(tmp_path / "late"))
    env.reset(seed=0)
    assert [env.step(1)[3] for _ in range(100)][-2:] == [False, True]
    with pytest.raises(ValueError, match="initial_step must be an integer >= 0"):
        WorldModel(model.config, initial_step=-1)
    with pytest.raises(ValueError, match="below the game's cap 2100, got 2100"):
        WorldModel(model.config, initial_step=2100)  # a dream would have no step left


@pytest.mark.parametrize("p,threshold_done", [(0.6, True), (0.4, False)])
def test_done_modes(p: float, threshold_done: bool) -> None:
    model = with_done_probability(make_tiny_world_model(), p)
    threshold = DreamEnv(model, done_mode="threshold", max_episode_steps=50)
    threshold.reset(seed=0)
    assert threshold.step(1)[2] is threshold_done
    sampled = DreamEnv(model)
    lengths = []
    for seed in range(300):
        sampled.reset(seed=seed)
        n = 1
        while not sampled.step(1)[2]:
            n += 1
        lengths.append(n)
    assert np.mean(lengths) == pytest.approx(1 / p, rel=0.15)  # geometric episode lengths


def test_render_decodes_z_with_v() -> None:
    model = make_tiny_world_model()
    env = DreamEnv(model, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    with torch.no_grad():
        expected = model.vae.decode(torch.as_tensor(obs[:TINY_Z])[None])[0].permute(1, 2, 0).mul(255).round()
    assert np.abs(frame.astype(int) - expected.numpy().astype(int)).max() <= 1


def test_temperature_attribute() -> None:
    env = DreamEnv(make_tiny_world_model())
    assert env.temperature == pytest.approx(1.15)  # the paper's TakeCover temperature
    env.temperature = 0.5
    assert env.temperature == 0.5
    # CarRacing: 0.1, where its dream keeps the road
    assert DreamEnv(make_tiny_world_model("carracing")).temperature == pytest.approx(0.1)


@pytest.mark.parametrize(
    "game,action,error,match",
    [
        ("takecover", 3, ValueError, "out of range"),
        ("takecover", -1, ValueError, "out of range"),
        ("takecover", 2**63, ValueError, "out of range for Discrete"),
        ("takecover", np.uint64(2**64 - 1), ValueError, "out of range for Discrete"),
        ("takecover", 1.0, TypeError, "integers"),
        ("takecover", True, TypeError, "real numbers"),
        ("takecover", "left", TypeError, "numbers"),
        ("takecover", np.array([1]), ValueError, "shape"),
        ("carracing", np.array([np.nan, 0.5, 0.0]), ValueError, "NaN or inf"),
        ("carracing", np.array([0.0, np.inf, 0.0]), ValueError, "NaN or inf"),
        ("carracing", np.zeros(2), ValueError, "shape"),
    ],
)
def test_bad_actions_raise_one_clear_error(game: str, action, error: type, match: str) -> None:
    env = DreamEnv(make_tiny_world_model(game))
    env.reset(seed=0)
    with pytest.raises(error, match=match):
        env.step(action)


def test_stepping_without_a_running_episode_raises(tiny_bundle) -> None:
    env = DreamEnv(with_done_probability(make_tiny_world_model(), 0.6), done_mode="threshold")
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        env.step(1)
    env.reset(seed=0)
    assert env.step(1)[2]
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        env.step(1)
    with pytest.raises(gym.error.ResetNeeded):
        gym.make("dreamgym/TakeCoverDream-v0", world_model=tiny_bundle()).step(1)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_raises(value: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        DreamEnv(make_tiny_world_model(), temperature=value)
    env = DreamEnv(make_tiny_world_model())
    with pytest.raises(ValueError, match="temperature"):
        env.temperature = value
    assert env.temperature == pytest.approx(1.15)


@pytest.mark.parametrize("value", ["hot", "1.0", b"x", {"tau": 1.0}, torch.tensor(True)])
def test_temperature_that_is_not_a_number_raises_the_envs_error(value: object) -> None:
    env = DreamEnv(make_tiny_world_model())
    with pytest.raises(TypeError, match="temperature must be a real number"):
        env.temperature = value
    with pytest.raises(TypeError, match="temperature must be a real number"):
        DreamEnv(make_tiny_world_model(), temperature=value)
    assert env.temperature == pytest.approx(1.15)


@pytest.mark.parametrize("seed", [-1, 2**64, 2**70, 2**64 + 7])
def test_seeds_outside_0_to_2_pow_64_are_refused(seed: int) -> None:
    env = DreamEnv(make_tiny_world_model())
    with pytest.raises(ValueError, match=rf"seed must be an integer in \[0, 2\*\*64\), got {seed}"):
        env.reset(seed=seed)


def test_the_largest_seed_plays_its_own_episode() -> None:
    model = make_tiny_world_model()
    largest, zero = DreamEnv(model).reset(seed=2**64 - 1)[0], DreamEnv(model).reset(seed=0)[0]
    assert not np.array_equal(largest, zero)


def test_bad_constructor_arguments_raise(tmp_path: Path) -> None:
    model = make_tiny_world_model()
    with pytest.raises(ValueError, match="obs_mode"):
        DreamEnv(model, obs_mode="hz")
    with pytest.raises(ValueError, match="done_mode"):
        DreamEnv(model, done_mode="maybe")
    with pytest.raises(ValueError, match="max_episode_steps"):
        DreamEnv(model, max_episode_steps=0)
    with pytest.raises(ValueError, match="for game 'takecover', not 'carracing'"):
        DreamEnv(model, game="carracing")
    with pytest.raises(ValueError, match="one temperature"):
        DreamEnv(model).temperature = [1.0, 2.0]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            DreamEnv(model, device="cuda")


def test_missing_bundle_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"world_model=.*recipes\.pipeline"):
        gym.make("dreamgym/TakeCoverDream-v0", world_model=str(tmp_path / "nothing_here"))


@pytest.mark.parametrize("limit,expected", [(7, 7), (2200, 2100)])
def test_make_and_make_vec_truncate_where_max_episode_steps_and_the_game_cap_allow(
    limit: int, expected: int, tmp_path: Path
) -> None:
    """gym.make wraps TimeLimit(N), make_vec hands N to the vector env: both end at min(N, the game's cap)."""
    folder = tmp_path / "never_done"
    with_done_probability(make_tiny_world_model(), 0.0).save(folder)
    env = gym.make("dreamgym/TakeCoverDream-v0", world_model=str(folder), max_episode_steps=limit)
    env.reset(seed=0)
    steps, truncated = 0, False
    while not truncated:
        truncated = env.step(1)[3]
        steps += 1
    assert steps == expected and env.spec.max_episode_steps == limit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        envs = gym.make_vec("dreamgym/TakeCoverDream-v0", 2, world_model=str(folder), max_episode_steps=limit,
                            device="cpu")  # fmt: skip
    assert any("above takecover's cap" in str(w.message) for w in caught) == (limit > expected)
    envs.reset(seed=0)
    for step in range(1, expected + 1):
        truncated_vec = envs.step(np.ones(2, dtype=np.int64))[3]
        assert truncated_vec.all() == (step == expected)


def test_a_bundle_starting_its_dreams_late_caps_them_at_the_rest_by_default_and_at_the_games_cap_at_most() -> None:
    """CarRacing bundles start dreams at frame 60: 940 steps by default; a dream started by hand at frame 0 (as
    tools.record starts one) may be given the whole 1,000; more is cut to the game's cap."""
    tiny = make_tiny_world_model("carracing")
    late = WorldModel(tiny.config, tiny.initial_mu, tiny.initial_logvar, tiny.provenance, initial_step=60)
    assert DreamEnv(late).core.max_episode_steps == 940
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert DreamEnv(late, max_episode_steps=1000).core.max_episode_steps == 1000
    with pytest.warns(UserWarning, match="above carracing's cap"):
        assert DreamEnv(late, max_episode_steps=1001).core.max_episode_steps == 1000
