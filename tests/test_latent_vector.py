"""The real-game latent VectorEnv: N games in worker processes, V and M batched in the main process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import dreamgym  # noqa: F401  (registers the ids)
from dreamgym.envs import LatentVectorEnv, make_latent_env

STEPS, CAP = 30, 10  # a cap of 10 steps ends every episode twice, through autoreset


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # ViZDoom writes _vizdoom.ini into the working folder


@pytest.mark.parametrize("encode_in", ["workers", "main"])
def test_env_i_plays_what_a_single_latent_env_seeded_s_plus_i_plays(tiny_bundle, encode_in: str) -> None:
    """Same observations (up to batched-matmul rounding), rewards, terminations and truncations, through
    autoresets, whether V encodes in the game workers or batched in the main process."""
    bundle, n, seed = tiny_bundle(), 3, 11
    envs = gym.make_vec("dreamgym/TakeCoverLatent-v0", num_envs=n, world_model=bundle, obs_mode="zch",
                        max_episode_steps=CAP, encode_in=encode_in)  # fmt: skip
    singles = [make_latent_env("takecover", bundle, obs_mode="zch", max_episode_steps=CAP) for _ in range(n)]
    actions = np.random.default_rng(0).integers(3, size=(STEPS, n))
    try:
        assert isinstance(envs, LatentVectorEnv) and envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
        assert envs.encode_in == encode_in
        obs, _ = envs.reset(seed=seed)
        for i, env in enumerate(singles):
            np.testing.assert_allclose(obs[i], env.reset(seed=seed + i)[0], atol=1e-5)
        ended, episodes_ended = np.zeros(n, dtype=bool), 0
        for t in range(STEPS):
            obs, reward, terminated, truncated, _ = envs.step(actions[t])
            for i, env in enumerate(singles):
                if ended[i]:  # the vector env's step resets this game; a single env is reset by hand
                    expected: tuple[Any, ...] = (env.reset()[0], 0.0, False, False)
                else:
                    expected = env.step(actions[t, i])[:4]
                np.testing.assert_allclose(obs[i], expected[0], atol=1e-5)
                assert (reward[i], terminated[i], truncated[i]) == expected[1:], (t, i)
            ended = terminated | truncated
            episodes_ended += int(ended.sum())
        assert episodes_ended >= 2 * n  # autoreset was exercised
    finally:
        envs.close()
        for env in singles:
            env.close()


def test_vector_env_checks(tiny_bundle) -> None:
    """Spaces, dtypes, seeded determinism, fresh arrays each step, and one clear error per misuse."""
    envs = LatentVectorEnv(2, tiny_bundle(), game="takecover", max_episode_steps=CAP)
    try:
        with pytest.raises(gym.error.ResetNeeded):
            envs.step([1, 1])
        first, _ = envs.reset(seed=3)
        assert envs.observation_space.contains(first) and first.shape == (2, *envs.single_observation_space.shape)
        again, _ = envs.reset(seed=3)
        np.testing.assert_array_equal(first, again)
        obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
        assert envs.observation_space.contains(obs) and obs is not again and not np.shares_memory(obs, again)
        assert reward.shape == terminated.shape == truncated.shape == (2,) and terminated.dtype == bool
        assert isinstance(info, dict)
        with pytest.raises(ValueError, match="out of range"):
            envs.step([0, 3])
        with pytest.raises(ValueError, match="shape"):
            envs.step([0, 1, 2])
        for seed in (-1, 2**64 - 1, [0, 2**64], True):  # env 1 of seed 2**64 - 1 would take 2**64
            with pytest.raises((ValueError, TypeError), match="seed"):
                envs.reset(seed=seed)
        with pytest.raises(ValueError, match="2 envs"):
            envs.reset(seed=[1, 2, 3])
        envs.reset(seed=[5, None])
    finally:
        envs.close()
    with pytest.raises(ValueError, match="num_envs"):
        LatentVectorEnv(0, tiny_bundle(), game="takecover")


def test_carracing_vector_env_steps(tiny_bundle) -> None:
    envs = gym.make_vec("dreamgym/CarRacingLatent-v0", num_envs=2, world_model=tiny_bundle("carracing"))
    try:
        obs, _ = envs.reset(seed=0)
        for _ in range(3):
            obs, reward, *_ = envs.step(np.array([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]], np.float32))
        assert envs.observation_space.contains(obs) and np.isfinite(reward).all()
    finally:
        envs.close()


def test_disabled_autoreset_resets_chosen_envs_with_their_own_seeds(tiny_bundle) -> None:
    """Every episode from its own seed (as agents.evaluate plays them): env i reset with seed k equals a single env
    reset with seed k; the other envs' rows stay as they were, and an ended env must be reset before stepping."""
    bundle = tiny_bundle()
    envs = LatentVectorEnv(2, bundle, game="takecover", max_episode_steps=4, autoreset_mode=AutoresetMode.DISABLED)
    single = make_latent_env("takecover", bundle, max_episode_steps=4)
    try:
        assert envs.metadata["autoreset_mode"] == AutoresetMode.DISABLED
        with pytest.raises(ValueError, match="reset_mask"):
            envs.reset(seed=[0, 1], options={"reset_mask": np.array([True, False])})  # before a first reset
        envs.reset(seed=[100, 200])
        for _ in range(3):
            envs.step([1, 1])
        obs, *_, truncated, _ = envs.step([1, 1])
        assert truncated.all()
        with pytest.raises(gym.error.ResetNeeded, match="ended"):
            envs.step([1, 1])
        before = obs.copy()
        obs, _ = envs.reset(seed=[7, None], options={"reset_mask": np.array([True, False])})
        np.testing.assert_array_equal(obs[1], before[1])  # env 1 untouched
        np.testing.assert_allclose(obs[0], single.reset(seed=7)[0], atol=1e-5)
        with pytest.raises(gym.error.ResetNeeded, match=r"\[1\]"):
            envs.step([2, 2])
        envs.reset(seed=[None, 8], options={"reset_mask": np.array([False, True])})
        obs, reward, *_ = envs.step([2, 0])
        np.testing.assert_allclose(obs[0], single.step(2)[0], atol=1e-5)
    finally:
        envs.close()
        single.close()


def test_the_vector_backend_plays_a_latent_ids_episodes_in_turn_as_the_pool_does(tiny_bundle) -> None:
    """agents' vector backend on a Latent id: 2 games take 3 candidates x 3 episodes in turn, uneven lengths and
    all; the same seeds give the same returns as one latent env per episode (the pool backend)."""
    from agents.rollout import VectorEvaluator
    from agents.workers import PoolEvaluator
    from dreamgym.controller import ControllerConfig

    kwargs = {"world_model": str(tiny_bundle()), "obs_mode": "zh", "max_episode_steps": 150}
    probe = make_latent_env("takecover", kwargs["world_model"], obs_mode="zh")
    config = ControllerConfig.for_env(probe, "dreamgym/TakeCoverLatent-v0")
    probe.close()
    params = np.random.default_rng(3).normal(0, 1, (3, config.n_params)).astype(np.float32)
    vector = VectorEvaluator("dreamgym/TakeCoverLatent-v0", kwargs, config, "cpu", num_envs=2)
    pool = PoolEvaluator("dreamgym/TakeCoverLatent-v0", kwargs, config, workers=1, timeout=120.0)
    try:
        got, expected = vector.evaluate(params, 3, seed=40), pool.evaluate(params, 3, seed=40)
    finally:
        vector.close()
        pool.close()
    assert len(set(got.lengths.ravel().tolist())) > 1  # uneven episodes: the games took them in turn
    np.testing.assert_array_equal(got.seeds, expected.seeds)
    np.testing.assert_array_equal(got.lengths, expected.lengths)
    np.testing.assert_allclose(got.returns, expected.returns)
