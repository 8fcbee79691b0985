"""The latent-observation wrapper over the real games (VizDoom TakeCover, CarRacing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import TINY_HIDDEN, TINY_Z, make_tiny_world_model
from gymnasium.utils.env_checker import check_env

import dreamgym  # noqa: F401  (registers the ids)
from dreamgym.envs import DreamEnv, DreamVectorEnv, LatentObservation
from dreamgym.games import get_game
from dreamgym.models.vae import frames_to_tensor


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # ViZDoom writes _vizdoom.ini into the working folder


class RawRecorder(gym.Wrapper):
    """Keeps the real game's last raw observation and reward, to check the wrapper against."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        self.raw, info = self.env.reset(**kwargs)
        return self.raw, info

    def step(self, action: Any) -> tuple:
        self.raw, self.reward, *rest = self.env.step(action)
        return (self.raw, self.reward, *rest)


@pytest.mark.parametrize("game", ["takecover", "carracing"])
def test_gymnasium_check_env_passes_on_the_real_game(game: str, tiny_bundle) -> None:
    env = gym.make(f"dreamgym/{get_game(game).title}Latent-v0", world_model=tiny_bundle(game), render_mode="rgb_array")
    try:
        check_env(env, skip_render_check=False)
    finally:
        env.close()


@pytest.mark.parametrize("game", ["takecover", "carracing"])
@pytest.mark.parametrize("obs_mode", ["zh", "zch", "z"])
def test_same_spaces_as_the_dream(game: str, obs_mode: str) -> None:
    """A controller made for the dream fits the real game unchanged."""
    model = make_tiny_world_model(game)
    real = LatentObservation(gym.Env(), model, obs_mode=obs_mode)  # spaces need no running game
    for dream in (DreamEnv(model, obs_mode=obs_mode), DreamVectorEnv(2, model, obs_mode=obs_mode, device="cpu")):
        spaces = (dream.observation_space, dream.action_space)
        if isinstance(dream, DreamVectorEnv):
            spaces = (dream.single_observation_space, dream.single_action_space)
        assert (real.observation_space, real.action_space) == spaces
        assert real.metadata["dreamgym_game"] == dream.metadata["dreamgym_game"] == game


def test_observation_is_v_then_m_over_the_real_frames() -> None:
    """obs_0 = [encode(frame_0), c=0, h=0]; obs_1 = [encode(frame_1), state of M after (z_0, a_0, restart=1)]."""
    spec, model = get_game("takecover"), make_tiny_world_model()
    recorder = RawRecorder(spec.make_real_env())
    env = LatentObservation(recorder, model, obs_mode="zch", z_mode="mean")
    try:
        obs0, _ = env.reset(seed=3)
        with torch.no_grad():
            z0 = model.vae.encode(frames_to_tensor(spec.to_frame(recorder.raw)[None]))[0]
            np.testing.assert_allclose(obs0, np.concatenate([z0[0].numpy(), np.zeros(2 * TINY_HIDDEN)]), atol=1e-6)
            obs1, reward, *_ = env.step(2)  # move right
            z1 = model.vae.encode(frames_to_tensor(spec.to_frame(recorder.raw)[None]))[0]
            state = model.mdnrnn.initial_state(1)
            _, (h, c) = model.mdnrnn.step(z0, spec.encode_action(torch.tensor([2])), torch.ones(1), state)
        np.testing.assert_allclose(obs1, torch.cat([z1, c, h], dim=1)[0].numpy(), atol=1e-5)
        assert reward == recorder.reward  # real rewards pass through
    finally:
        env.close()


def test_sampled_z_is_seeded_and_spread_around_the_mean() -> None:
    spec, model = get_game("takecover"), make_tiny_world_model()
    env = LatentObservation(spec.make_real_env(), model)
    mean_env = LatentObservation(spec.make_real_env(), model, z_mode="mean")
    try:
        a, b = env.reset(seed=1)[0], env.reset(seed=1)[0]
        np.testing.assert_array_equal(a, b)
        c = env.reset(seed=2)[0]
        mu = mean_env.reset(seed=1)[0]
        assert not np.array_equal(a[:TINY_Z], c[:TINY_Z]) and not np.array_equal(a[:TINY_Z], mu[:TINY_Z])
    finally:
        env.close()
        mean_env.close()


def test_render_real_frame_or_side_by_side(tiny_bundle) -> None:
    plain = gym.make("dreamgym/TakeCoverLatent-v0", world_model=tiny_bundle(), render_mode="rgb_array")
    both = gym.make(
        "dreamgym/TakeCoverLatent-v0", world_model=tiny_bundle(), render_mode="rgb_array", side_by_side=True
    )
    try:
        plain.reset(seed=0)
        both.reset(seed=0)
        assert plain.render().shape == (240, 320, 3)
        frame = both.render()
        assert frame.shape == (256, 512, 3) and frame.dtype == np.uint8
        assert not np.array_equal(frame[:, :256], frame[:, 256:])
    finally:
        plain.close()
        both.close()


def test_bad_actions_and_order_raise() -> None:
    env = LatentObservation(get_game("takecover").make_real_env(), make_tiny_world_model())
    try:
        with pytest.raises(gym.error.ResetNeeded, match="reset"):
            env.step(1)
        env.reset(seed=0)
        with pytest.raises(ValueError, match="out of range"):
            env.step(3)
        with pytest.raises(TypeError, match="integers"):
            env.step(0.5)
        with pytest.raises(ValueError, match="z_mode"):
            LatentObservation(env.env, make_tiny_world_model(), z_mode="median")
    finally:
        env.close()


@pytest.mark.parametrize("obs_mode", ["zch", "zh"])
def test_fast_path_is_bit_identical_to_v_encode_and_m_step(obs_mode: str) -> None:
    """The env's observations equal, bit for bit, V.encode + sampled z + MDNRNN.step (heads and all) on the frames."""
    spec, model = get_game("takecover"), make_tiny_world_model()
    recorder = RawRecorder(spec.make_real_env(max_episode_steps=6))
    env = LatentObservation(recorder, model, obs_mode=obs_mode)
    generator, m = torch.Generator(), model.mdnrnn

    def reference(state: tuple[torch.Tensor, torch.Tensor]) -> tuple[np.ndarray, torch.Tensor]:
        mu, logvar = model.vae.encode(frames_to_tensor(spec.to_frame(recorder.raw)[None]))
        z = torch.addcmul(mu, torch.exp(0.5 * logvar), torch.randn(mu.shape, generator=generator))
        h, c = state
        return torch.cat([z, h] if obs_mode == "zh" else [z, c, h], dim=1)[0].numpy(), z

    try:
        with torch.inference_mode():
            for seed in (0, 7):
                obs, _ = env.reset(seed=seed)
                generator.manual_seed(seed)
                state, restart = m.initial_state(1), torch.ones(1)
                expected, z = reference(state)
                np.testing.assert_array_equal(obs, expected)
                for t in range(6):
                    action = [0, 2, 1][t % 3]
                    _, state = m.step(z, spec.encode_action(torch.tensor([action])), restart, state)
                    restart = torch.zeros(1)
                    obs, *_ = env.step(action)
                    expected, z = reference(state)
                    np.testing.assert_array_equal(obs, expected)
    finally:
        env.close()


def test_step_after_the_episode_ended_needs_a_reset_and_moves_nothing() -> None:
    spec = get_game("takecover")
    recorder = RawRecorder(spec.make_real_env(max_episode_steps=2))
    env = LatentObservation(recorder, make_tiny_world_model())
    try:
        env.reset(seed=0)
        env.step(1)
        *_, truncated, _ = env.step(1)
        assert truncated
        raw, h, c = recorder.raw, env.core.h.clone(), env.core.c.clone()
        with pytest.raises(gym.error.ResetNeeded, match="ended"):
            env.step(1)
        assert recorder.raw is raw and torch.equal(env.core.h, h) and torch.equal(env.core.c, c)
        env.reset()
        env.step(1)  # a reset lets it play again
    finally:
        env.close()


@pytest.mark.parametrize("seed", [-1, 2**64, True, 1.5, "3"])
def test_seeds_outside_0_to_2_pow_64_are_refused(seed: Any) -> None:
    env = LatentObservation(get_game("takecover").make_real_env(), make_tiny_world_model())
    try:
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
            env.reset(seed=seed)
        env.reset(seed=2**64 - 1)  # the largest seed works
    finally:
        env.close()
