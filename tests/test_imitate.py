"""Behaviour cloning (agents.imitate): it recovers a linear teacher from its recorded episodes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import dreamgym  # noqa: F401  (registers the ids)
from agents.backends import EnvArgs, probe_config
from agents.imitate import ImitateArgs, column_mean_std, gains_reward_within, imitate, main, ridge_fit
from dreamgym.controller import Controller, ControllerConfig
from dreamgym.data import episode_path, save_arrays
from dreamgym.envs.dream import latent_observation
from dreamgym.envs.registration import dream_id
from dreamgym.games import get_game
from dreamgym.world_model import WorldModel


def teacher_episodes(bundle: Path, out: Path, teacher: Controller, count: int, steps: int,
                     labels_only: bool = False) -> list[float]:  # fmt: skip
    """Latent files of ``count`` episodes where ``teacher`` acts on [z, h] exactly as in the latent env; with
    ``labels_only`` random actions are played (and drive M) and the teacher's are recorded as expert labels."""
    model = WorldModel.load(bundle)
    rng = np.random.default_rng(0)
    returns = []
    for k in range(count):
        mu = rng.normal(size=(steps, model.config.vae.z_size)).astype(np.float32)
        logvar = np.full_like(mu, -12.0)  # z ~= mu: the fit sees (almost) the teacher's own inputs
        state, played, labels = model.mdnrnn.initial_state(1), [], []
        with torch.inference_mode():
            for t in range(steps):
                z = torch.from_numpy(mu[t : t + 1])
                labels.append(teacher.act(latent_observation(z, state[0], state[1], "zh")[0].numpy()))
                space = model.game.action_space
                played.append(rng.uniform(space.low, space.high).astype(np.float32) if labels_only else labels[-1])
                a = model.game.encode_action(torch.from_numpy(played[-1][None]))
                _, state = model.mdnrnn.step(z, a, torch.full((1,), float(t == 0)), state)
        rewards = np.full(steps, float(k), np.float32)  # episode k returns k * steps
        returns.append(float(rewards.sum()))
        flags = np.zeros(steps, bool)
        arrays = {"mu": mu, "logvar": logvar, "actions": np.stack(played), "rewards": rewards, "terminated": flags,
                  "truncated": flags} | ({"expert_actions": np.stack(labels)} if labels_only else {})  # fmt: skip
        save_arrays(episode_path(out, k), arrays)
    return returns


def linear_teacher(config: ControllerConfig) -> tuple[Controller, np.ndarray]:
    """A teacher whose steer and gas are linear in [z, h] and which never brakes; and its weights."""
    rng = np.random.default_rng(1)
    weight = rng.normal(0.0, 0.3, size=(3, config.obs_dim)).astype(np.float32)
    weight[2] = 0.0
    return Controller(config, np.concatenate([weight.ravel(), [0.1, -0.2, -3.0]]).astype(np.float32)), weight


def test_imitation_recovers_a_linear_teacher(tiny_bundle: Callable[..., Path], tmp_path: Path) -> None:
    bundle, latents = tiny_bundle("carracing"), tmp_path / "latents"
    config = probe_config(EnvArgs(env=dream_id("carracing"), world_model=str(bundle), obs_mode="zh"))
    teacher, weight = linear_teacher(config)
    returns = teacher_episodes(bundle, latents, teacher, count=4, steps=120)

    args = ImitateArgs(world_model=str(bundle), latents=str(latents), out=str(tmp_path / "bc"),
                       min_return=returns[1], ridge=1e-6, clip=0.999)  # fmt: skip
    student, summary = imitate(args)
    assert (summary["episodes"], summary["steps"]) == (3, 360)  # episode 0 returns too little
    # Steer and gas follow the teacher's (brake, never used, only learns to stay off). The z weights are the
    # teacher's; a random tiny M's h units are too alike for theirs to be identified.
    z_size = config.obs_dim - 16
    np.testing.assert_allclose(student.weight[:2, :z_size], weight[:2, :z_size], atol=1e-2)
    assert summary["rmse_output0"] < 5e-3 and summary["rmse_output1"] < 5e-3
    env = gym.make(dream_id("carracing"), world_model=str(bundle))
    try:
        loaded = Controller.load(args.out, env)
        obs, _ = env.reset(seed=3)
        for _ in range(20):
            action = loaded.act(obs)
            np.testing.assert_allclose(action[:2], teacher.act(obs)[:2], atol=5e-3)
            assert action[2] == 0.0
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                obs, _ = env.reset()
    finally:
        env.close()


def test_expert_targets_fit_the_labels_in_the_states_another_policy_visited(
    tiny_bundle: Callable[..., Path], tmp_path: Path
) -> None:
    """DAgger: random actions were played (M's h follows them) and the teacher's recorded beside them;
    --targets expert recovers the teacher, and files without labels are left out."""
    bundle, latents = tiny_bundle("carracing"), tmp_path / "latents"
    config = probe_config(EnvArgs(env=dream_id("carracing"), world_model=str(bundle), obs_mode="zh"))
    teacher, weight = linear_teacher(config)
    teacher_episodes(bundle, latents, teacher, count=3, steps=120, labels_only=True)
    teacher_episodes(bundle, tmp_path / "unlabelled", Controller(config), count=1, steps=5)
    (tmp_path / "unlabelled" / "episode_000000.npz").rename(latents / "episode_000009.npz")
    args = ImitateArgs(world_model=str(bundle), latents=str(latents), out=str(tmp_path / "bc"), targets="expert",
                       ridge=1e-6, clip=0.999)  # fmt: skip
    student, summary = imitate(args)
    assert (summary["episodes"], summary["steps"]) == (3, 360)
    z_size = config.obs_dim - 16
    np.testing.assert_allclose(student.weight[:2, :z_size], weight[:2, :z_size], atol=1e-2)
    assert summary["rmse_output0"] < 5e-3 and summary["rmse_output1"] < 5e-3
    _, kept = imitate(dataclasses.replace(args, progress_window=10, out=str(tmp_path / "progress")))
    assert kept["steps"] == 240  # episode 0 gains no reward (all its rewards are 0): none of its steps is kept
    played, _ = imitate(dataclasses.replace(args, targets="actions", out=str(tmp_path / "played")))
    assert not np.allclose(played.weight[:2, :z_size], weight[:2, :z_size], atol=0.1)  # random actions fit nothing


def test_gains_reward_within_looks_ahead_over_the_window() -> None:
    rewards = np.array([-0.1, 3.0, -0.1, -0.1, -0.1, -0.1, 2.0, -0.1, -0.1, -0.1])
    for window in (1, 2, 3, 5, 20):
        expected = [bool((rewards[t : t + window] > 0).any()) for t in range(len(rewards))]
        assert gains_reward_within(rewards, window).tolist() == expected
    assert gains_reward_within(rewards, 3).tolist() == [1, 1, 0, 0, 1, 1, 1, 0, 0, 0]


def test_imitation_names_what_is_missing(tiny_bundle: Callable[..., Path], tmp_path: Path) -> None:
    bundle, latents = tiny_bundle("carracing"), tmp_path / "latents"
    config = probe_config(EnvArgs(env=dream_id("carracing"), world_model=str(bundle)))
    teacher_episodes(bundle, latents, Controller(config), count=2, steps=5)
    args = ImitateArgs(world_model=str(bundle), latents=str(latents), out=str(tmp_path / "bc"), min_return=100.0)
    with pytest.raises(ValueError, match=r"no episode .* returns >= 100.0 \(best: 5.0\)"):
        imitate(args)
    with pytest.raises(ValueError, match="no latent files"):
        imitate(ImitateArgs(world_model=str(bundle), latents=str(tmp_path / "empty"), out=str(tmp_path / "bc")))
    with pytest.raises(ValueError, match="holds expert_actions; collect with .*--expert-labels"):
        imitate(dataclasses.replace(args, targets="expert", min_return=-1.0))
    with pytest.raises(ValueError, match="--progress-window must be >= 0"):
        imitate(dataclasses.replace(args, progress_window=-1))
    with pytest.raises(ValueError, match="--targets must be one of"):
        imitate(dataclasses.replace(args, targets="teacher"))
    assert not (tmp_path / "bc").exists()


def test_command_line_fits_and_reports(tiny_bundle: Callable[..., Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    bundle, latents = tiny_bundle("carracing"), tmp_path / "latents"
    config = probe_config(EnvArgs(env=dream_id("carracing"), world_model=str(bundle)))
    teacher_episodes(bundle, latents, Controller(config), count=3, steps=6)
    main(["--world-model", str(bundle), "--latents", str(latents), "--out", str(tmp_path / "bc"), "--min-return", "6"])
    assert "imitated 2 episodes (12 steps, mean return 9.0)" in capsys.readouterr().out
    assert Controller.load(tmp_path / "bc").config == config


@pytest.mark.parametrize("game", ["takecover", "carracing"])
def test_unsquash_is_a_right_inverse_of_squash(game: str) -> None:
    spec = get_game(game)
    actions = np.array([spec.action_space.sample() for _ in range(50)])
    if game == "carracing":
        actions[::2, 2] = 0.0  # most recorded actions do not brake
    np.testing.assert_allclose(spec.squash_action(spec.unsquash_action(actions)).reshape(actions.shape), actions,
                               atol=1e-6)  # fmt: skip


def test_hidden_layer_copies_a_teacher_no_linear_map_can(tiny_bundle: Callable[..., Path], tmp_path: Path) -> None:
    """--hidden: a teacher with a saturating hidden layer is fit far better than by the ridge regression, on
    held-out episodes too (--holdout reports them), and the saved controller reads raw observations."""
    bundle, latents = tiny_bundle("carracing"), tmp_path / "latents"
    config = probe_config(EnvArgs(env=dream_id("carracing"), world_model=str(bundle), obs_mode="zh"), hidden=8)
    teacher = Controller(config)
    rng = np.random.default_rng(3)
    for name, tensor in teacher.tensors().items():  # views: this sets the teacher's parameters
        tensor[:] = rng.normal(0.0, 0.4 if name.startswith("hidden") else 2.0, tensor.shape)
    teacher.tensors()["bias"][2] = -5.0  # never brakes
    teacher_episodes(bundle, latents, teacher, count=8, steps=200)
    args = ImitateArgs(world_model=str(bundle), latents=str(latents), out=str(tmp_path / "linear"), ridge=1e-3,
                       holdout=0.25)  # fmt: skip
    ridge, linear = imitate(args)
    student, mlp = imitate(dataclasses.replace(args, out=str(tmp_path / "mlp"), hidden=32, epochs=300, lr=1e-2))
    assert (mlp["episodes"], mlp["heldout_episodes"], mlp["steps"]) == (6, 2, 1200)
    assert student.config.hidden == 32
    for key in ("rmse_output0", "heldout_rmse_output0", "rmse_output1", "heldout_rmse_output1"):
        assert mlp[key] < 0.5 * linear[key], key
    obs = np.random.default_rng(4).normal(size=(5, config.obs_dim)).astype(np.float32)
    obs[:, -16:] = np.tanh(obs[:, -16:])  # h is in (-1, 1)
    loaded = Controller.load(tmp_path / "mlp")
    np.testing.assert_allclose(loaded.act(obs[0]), student.act(obs[0]))
    with pytest.raises(ValueError, match="--holdout in"):
        imitate(dataclasses.replace(args, holdout=1.0))

    # --hidden-outputs 0: steering from the hidden layer, gas and brake from the ridge fit, in one controller
    mixed, _ = imitate(dataclasses.replace(args, out=str(tmp_path / "mixed"), hidden=32, epochs=300, lr=1e-2,
                                           hidden_outputs="0"))  # fmt: skip
    assert mixed.config.skip and Controller.load(tmp_path / "mixed").config.skip
    for o in obs:
        np.testing.assert_allclose(mixed.act(o)[0], student.act(o)[0], atol=1e-5)
        np.testing.assert_allclose(mixed.act(o)[1:], ridge.act(o)[1:], atol=1e-5)
    for bad in ("3", "x", ""):
        with pytest.raises(ValueError, match="--hidden-outputs must be"):
            imitate(dataclasses.replace(args, hidden=4, hidden_outputs=bad))
    with pytest.raises(ValueError, match="pass --hidden"):
        imitate(dataclasses.replace(args, hidden_outputs="0"))
    with pytest.raises(ValueError, match="--std-floor"):
        imitate(dataclasses.replace(args, hidden=4, std_floor=0.0))


def test_fits_over_many_chunks_match_the_whole_array_formulas() -> None:
    """ridge_fit and column_mean_std work chunk by chunk (float32 inputs of GBs); the result is the textbook one."""
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (150_000, 4)).astype(np.float32)
    y = x @ rng.normal(size=(4, 2)) + 0.5 + rng.normal(0, 0.1, (len(x), 2))
    design = np.concatenate([x.astype(np.float64), np.ones((len(x), 1))], axis=1)
    penalty = np.diag([0.1 * len(x)] * 4 + [0.0])
    expected = np.linalg.solve(design.T @ design + penalty, design.T @ y)
    flat = ridge_fit(x, y, 0.1, bias=True)
    np.testing.assert_allclose(flat[:8].reshape(2, 4), expected[:4].T, rtol=1e-5)
    np.testing.assert_allclose(flat[8:], expected[4], rtol=1e-5)
    mean, std = column_mean_std(x)
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(0), rtol=1e-9)
    np.testing.assert_allclose(std, x.astype(np.float64).std(0), rtol=1e-9)
