"""dreamgym.tools.record: the dream replays the real episode's actions from its first latent; videos read back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import TINY_Z, make_tiny_world_model

from dreamgym.controller import Controller, ControllerConfig
from dreamgym.envs import DreamEnv
from dreamgym.tools.record import (
    HEADER,
    compose,
    make_recording_env,
    record,
    roll_dream,
    roll_real,
    start_dream_at,
    write_video,
)
from dreamgym.world_model import WorldModel


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # ViZDoom writes _vizdoom.ini into the working folder


def with_done(model: WorldModel, logit: float) -> WorldModel:
    with torch.no_grad():
        model.mdnrnn.done.weight.zero_()
        model.mdnrnn.done.bias.fill_(logit)
    return model


def read_video(path: Path) -> np.ndarray:
    if path.suffix == ".gif":
        return iio.imread(path, index=None)
    return np.stack(list(iio.imiter(path, plugin="FFMPEG")))


def test_dream_starts_at_the_given_latent_and_replays_actions() -> None:
    model = with_done(make_tiny_world_model(), -60.0)
    z0 = np.linspace(-1, 1, TINY_Z).astype(np.float32)
    actions = [0, 2, 2, 1, 0]
    first = roll_dream(model, z0, actions, seed=3, temperature=1.0)
    assert first.z.shape == (6, TINY_Z) and first.ended_at is None and first.temperature == 1.0
    np.testing.assert_array_equal(first.z[0], z0)
    np.testing.assert_array_equal(roll_dream(model, z0, actions, seed=3, temperature=1.0).z, first.z)
    other = roll_dream(model, z0, [2, 2, 2, 2, 2], seed=3, temperature=1.0)
    assert not np.allclose(other.z[1:], first.z[1:])  # the actions matter
    ended = roll_dream(with_done(make_tiny_world_model(), 60.0), z0, actions, seed=3)
    assert ended.ended_at == 1 and len(ended.z) == 2


def test_start_dream_at_needs_a_fresh_episode() -> None:
    env = DreamEnv(make_tiny_world_model())
    env.reset(seed=0)
    env.step(1)
    with pytest.raises(ValueError, match="just reset"):
        start_dream_at(env, np.zeros(TINY_Z, np.float32))


def test_compose_lays_out_real_recon_dream_and_darkens_an_ended_dream() -> None:
    rng = np.random.default_rng(0)
    real, recon = (rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8) for _ in range(2))
    dream = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    frames = list(compose(real, recon, dream, ended_at=1, scale=2, temperature=1.15))
    assert len(frames) == 4 and all(f.shape == (HEADER + 128, 3 * 128, 3) for f in frames)
    body = frames[3][HEADER:]
    np.testing.assert_array_equal(body[::2, :128:2], real[3])
    np.testing.assert_array_equal(body[::2, 128:256:2], recon[3])
    np.testing.assert_array_equal(body[::2, 256::2], dream[-1] // 2)
    np.testing.assert_array_equal(frames[1][HEADER:][::2, 256::2], dream[1])


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_write_video_reads_back(tmp_path: Path, suffix: str) -> None:
    frames = [np.full((48, 96, 3), 20 * i, np.uint8) for i in range(7)]
    path = tmp_path / f"v{suffix}"
    assert write_video(path, iter(frames), fps=10) == 7
    video = read_video(path)
    assert video.shape[:3] == (7, 48, 96)
    assert abs(int(video[3, ..., :3].mean()) - 60) <= 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
    with pytest.raises(ValueError, match="must end in"):
        write_video(tmp_path / "v.avi", iter(frames), fps=10)


def test_real_rollout_keeps_frames_latents_and_actions() -> None:
    model = make_tiny_world_model()
    env = make_recording_env(model, steps=4, obs_mode="zh", z_mode="mean")
    seen: list[Any] = []

    def policy(obs: np.ndarray) -> int:
        seen.append(env.frame)
        return 2

    try:
        rollout = roll_real(env, policy, seed=0)
    finally:
        env.close()
    assert rollout.frames.shape == (5, 64, 64, 3) and rollout.z.shape == (5, TINY_Z) and rollout.actions == [2] * 4
    np.testing.assert_array_equal(seen[0], rollout.frames[0])
    with torch.inference_mode():  # z_mode="mean": z is V's mu of the real frame
        mu = model.vae.encode(torch.from_numpy(rollout.frames[:1].copy()).permute(0, 3, 1, 2).float() / 255)[0]
    np.testing.assert_allclose(rollout.z[0], mu[0].numpy(), atol=1e-5)


def test_record_writes_the_expected_frames(tmp_path: Path) -> None:
    model = with_done(make_tiny_world_model(), -60.0)
    result = record(model, tmp_path / "side.mp4", steps=5, scale=2, seed=1)
    assert (result.frames, result.real_steps, result.dream_ended_at) == (6, 5, None)
    assert read_video(result.path).shape == (6, HEADER + 128, 3 * 128, 3)


def test_record_script_with_a_controller(run_module: Callable[..., Any], tmp_path: Path,
                                         tiny_bundle: Callable[..., Path]) -> None:  # fmt: skip
    bundle = tiny_bundle()
    env = gym.make("dreamgym/TakeCoverDream-v0", world_model=str(bundle), obs_mode="zch")
    Controller(ControllerConfig.for_env(env)).save(tmp_path / "controller")
    proc = run_module("dreamgym.tools.record", "--world-model", str(bundle), "--controller",
                      str(tmp_path / "controller"), "--out", str(tmp_path / "out.gif"),
                      "--steps", "3", "--scale", "1")  # fmt: skip
    assert "4 frames" in proc.stdout
    assert read_video(tmp_path / "out.gif").shape[:3] == (4, HEADER + 64, 3 * 64)
