"""Stable-Baselines3: its env checker, the VecEnv adapter's API, and PPO learning in a dream through it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import TINY_Z, make_tiny_world_model
from gymnasium.vector import AutoresetMode
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecMonitor

from dreamgym.envs import DreamEnv, DreamVectorEnv, LatentObservation
from dreamgym.envs.sb3 import DreamVecEnvAdapter, make_sb3_vec_env
from dreamgym.games import get_game
from dreamgym.world_model import WorldModel


def adapter(model: WorldModel, n: int, **kwargs) -> DreamVecEnvAdapter:
    return DreamVecEnvAdapter(DreamVectorEnv(n, model, device="cpu", autoreset_mode=AutoresetMode.SAME_STEP, **kwargs))


@pytest.mark.parametrize("game", ["takecover", "carracing"])
def test_sb3_check_env_passes_on_the_dream(game: str) -> None:
    check_env(DreamEnv(make_tiny_world_model(game)))


def test_sb3_check_env_passes_on_the_latent_real_game(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # ViZDoom writes _vizdoom.ini into the working folder
    env = LatentObservation(get_game("takecover").make_real_env(), make_tiny_world_model())
    try:
        check_env(env)
    finally:
        env.close()


def test_adapter_translates_episode_ends() -> None:
    """dones = terminated | truncated; terminal_observation is the last obs; TimeLimit.truncated only on the cap."""
    envs = adapter(make_tiny_world_model(), 8, max_episode_steps=5)
    envs.seed(3)
    obs = envs.reset()
    assert obs.shape == (8, envs.observation_space.shape[0]) and obs.dtype == np.float32
    seen = {"terminated": 0, "truncated": 0}
    lengths = np.zeros(8, int)
    for _ in range(20):
        obs, rewards, dones, infos = envs.step(np.ones(8, np.int64))
        lengths += 1
        assert rewards.dtype == np.float32 and dones.dtype == bool and len(infos) == 8
        for i in range(8):
            assert dones[i] or lengths[i] < 5  # the cap ends every episode at step 5 ...
            assert not infos[i]["TimeLimit.truncated"] or (dones[i] and lengths[i] == 5)  # ... flagged if not terminal
            assert ("terminal_observation" in infos[i]) == dones[i]
            if dones[i]:
                assert not np.array_equal(infos[i]["terminal_observation"], obs[i])
                assert np.all(obs[i][TINY_Z:] == 0)  # already the next episode's first observation
                seen["truncated" if infos[i]["TimeLimit.truncated"] else "terminated"] += 1
        lengths[dones] = 0
    assert seen["terminated"] > 0 and seen["truncated"] > 0


def test_adapter_seeding_attributes_and_images() -> None:
    model = make_tiny_world_model()
    envs = adapter(model, 3, render_mode="rgb_array", temperature=[0.5, 1.0, 1.5])
    envs.seed(7)
    first = envs.reset()
    envs.seed(7)
    np.testing.assert_array_equal(envs.reset(), first)
    np.testing.assert_array_equal(first[1], DreamEnv(model).reset(seed=8)[0])  # env i gets seed + i
    assert envs.get_attr("temperature") == pytest.approx([0.5, 1.0, 1.5])
    assert envs.get_attr("render_mode", indices=[0, 2]) == ["rgb_array", "rgb_array"]
    envs.set_attr("temperature", 2.0, indices=[1])
    assert envs.get_attr("temperature") == pytest.approx([0.5, 2.0, 1.5])
    with pytest.raises(ValueError, match="shared by all dreams"):
        envs.set_attr("render_mode", None, indices=[0])
    images = envs.get_images()
    assert len(images) == 3 and images[0].shape == (64, 64, 3)
    assert envs.render().shape == (128, 128, 3)  # SB3 tiles the 3 frames 2 x 2
    assert envs.env_is_wrapped(gym.Wrapper) == [False] * 3


def test_adapter_needs_same_step_numpy_dreams(tiny_bundle) -> None:
    with pytest.raises(ValueError, match="SAME_STEP"):
        DreamVecEnvAdapter(DreamVectorEnv(2, make_tiny_world_model(), device="cpu"))
    with pytest.raises(ValueError, match="numpy"):
        adapter(make_tiny_world_model(), 2, return_tensors=True)
    made = make_sb3_vec_env("dreamgym/TakeCoverDream-v0", 2, world_model=tiny_bundle(), device="cpu")
    assert made.num_envs == 2 and made.reset().shape[0] == 2


def action_sensitive_takecover() -> WorldModel:
    """A tiny TakeCover dream in which the action decides survival.

    LSTM unit 0 copies the encoded action a in {-1, 0, 1} (left, stay, right): input gate open, forget gate
    shut, cell input tanh(3a), output gate open, so h_0 = tanh(tanh(3a)) in {-0.76, 0, 0.76} right after
    the action. The done head reads only h_0: calibrated P(done) = sigmoid(-2 + 4 h_0) = 0.006 after
    "left", 0.12 after "stay", 0.74 after "right". The rest of M stays random.
    """
    model = make_tiny_world_model()
    lstm, hidden, action_input = model.mdnrnn.lstm, model.config.mdnrnn.hidden_size, TINY_Z
    gate_bias = {0: 10.0, 1: -10.0, 2: 0.0, 3: 10.0}  # input, forget, cell, output rows of unit 0
    with torch.no_grad():
        for gate, bias in gate_bias.items():
            row = gate * hidden
            lstm.weight_ih_l0[row].zero_()
            lstm.weight_hh_l0[row].zero_()
            lstm.bias_hh_l0[row] = 0.0
            lstm.bias_ih_l0[row] = bias
        lstm.weight_ih_l0[2 * hidden, action_input] = 3.0
        model.mdnrnn.done.weight.zero_()
        model.mdnrnn.done.weight[0, 0] = 4.0
        model.mdnrnn.done.bias.fill_(-2.0 + math.log(model.config.mdnrnn.done_pos_weight))
    return model


class RandomPolicy:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def predict(self, obs: np.ndarray, state=None, episode_start=None, deterministic=False) -> tuple:
        return self.rng.integers(3, size=len(obs)), None


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny networks gain nothing from threads, and on a busy machine thread hand-offs dominate."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_ppo_learns_in_the_dream_through_the_adapter() -> None:
    """PPO, 4,096 dream steps through the adapter, beats a random policy by far.

    In :func:`action_sensitive_takecover` a random policy survives ~3.5 steps on average and always
    moving left ~73 (capped at 100); the survival reward is +1 per step. Asserted: the trained policy's
    deterministic mean return over 32 seeded episodes is at least 5x the random policy's and at least 20,
    which an untrained (or non-learning) PPO does not reach: it picks one action, usually not "left".
    """
    model = action_sensitive_takecover()
    ppo = PPO("MlpPolicy", adapter(model, 8, max_episode_steps=100), n_steps=64, batch_size=128, n_epochs=4,
              learning_rate=3e-3, seed=0, device="cpu")  # fmt: skip

    def mean_return(policy) -> float:
        episodes = adapter(model, 8, max_episode_steps=100)
        episodes.seed(123)
        returns, _ = evaluate_policy(policy, episodes, n_eval_episodes=32, deterministic=True,
                                     return_episode_rewards=True, warn=False)  # fmt: skip
        return float(np.mean(returns))

    random_return = mean_return(RandomPolicy(0))
    assert random_return < 6
    ppo.learn(4096)
    trained = mean_return(ppo)
    assert trained >= max(20.0, 5 * random_return), (trained, random_return)


def test_sb3_ppo_script_trains_saves_and_scores(tiny_bundle, run_module, tmp_path: Path) -> None:
    proc = run_module(
        "agents.sb3_ppo", "--world-model", str(tiny_bundle()), "--timesteps", "128", "--num-envs", "2",
        "--n-steps", "64", "--device", "cpu", "--eval-episodes", "2", "--eval-max-steps", "20", "--out", "ppo",
    )  # fmt: skip
    assert (tmp_path / "ppo" / "ppo.zip").is_file()
    assert "dream: " in proc.stdout and "real: " in proc.stdout and "dreamgym/TakeCoverLatent-v0" in proc.stdout


def test_make_sb3_vec_env_monitors_episodes_by_default(tiny_bundle) -> None:
    """PPO(..., make_sb3_vec_env(...)).learn() logs ep_rew_mean: finished episodes carry infos["episode"]."""
    envs = make_sb3_vec_env("dreamgym/TakeCoverDream-v0", 4, world_model=tiny_bundle(), device="cpu")
    assert isinstance(envs, VecMonitor)
    assert isinstance(make_sb3_vec_env("dreamgym/TakeCoverDream-v0", 2, monitor=False, world_model=tiny_bundle(),
                                       device="cpu"), DreamVecEnvAdapter)
    envs.seed(0)
    envs.reset()
    lengths = np.zeros(4)
    for _ in range(5_000):
        _, rewards, dones, infos = envs.step(np.ones(4, dtype=np.int64))
        lengths += 1
        finished = [(i, info["episode"]) for i, info in enumerate(infos) if dones[i]]
        if finished:
            i, episode = finished[0]
            assert episode["l"] == lengths[i] and episode["r"] == pytest.approx(lengths[i])  # +1 per step
            return
    pytest.fail("no dream episode ended in 5,000 steps")
