"""training.refit_reward: a new reward head fit on real episodes, the rest of the world model untouched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_world_model

from dreamgym.data import Episode, episode_path, save_episode
from dreamgym.fidelity import hidden_states
from dreamgym.world_model import WorldModel
from training.encode import encode_frames
from training.refit_reward import REPORT_FILE, RefitRewardArgs, main, refit_reward

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def episodes_paid_by(model: WorldModel, weight: np.ndarray, bias: float, folder: Path, count: int) -> None:
    """CarRacing-shaped shards whose reward at step t is weight . h_t + bias for this model's teacher-forced h."""
    rng = np.random.default_rng(0)
    for i in range(count):
        steps = int(rng.integers(15, 30))
        frames = rng.integers(0, 256, size=(steps, 64, 64, 3), dtype=np.uint8)
        actions = rng.uniform([-1, 0, 0], [1, 1, 1], size=(steps, 3)).astype(np.float32)
        with torch.no_grad():
            mu = torch.from_numpy(encode_frames(model.vae, frames, torch.device("cpu"), 64)[0])
            h = hidden_states(model.mdnrnn, mu, model.game.encode_action(torch.from_numpy(actions)).reshape(steps, -1))
        rewards = (h.double().numpy() @ weight + bias).astype(np.float32)
        save_episode(episode_path(folder, i), Episode(frames, actions, rewards, np.zeros(steps, bool),
                                                      np.zeros(steps, bool), i, "carracing"))  # fmt: skip


def test_the_refit_head_recovers_the_reward_and_nothing_else_changes(tmp_path: Path) -> None:
    model = make_tiny_world_model("carracing")
    model.save(tmp_path / "bundle")
    weight = np.random.default_rng(1).normal(size=model.config.mdnrnn.hidden_size)
    episodes_paid_by(model, weight, 0.3, tmp_path / "episodes", 9)
    out = tmp_path / "refit"
    report = refit_reward(RefitRewardArgs(world_model=str(tmp_path / "bundle"), episodes=str(tmp_path / "episodes"),
                                          out=str(out), ridge=1e-9, holdout=3, device="cpu"))  # fmt: skip
    assert report["held_out"]["episodes"] == 3 and report["fit"]["episodes"] == 6
    for row in report["episodes"]:
        assert row["new"] == pytest.approx(row["real"], abs=1e-3)
    refit = WorldModel.load(out)
    np.testing.assert_allclose(refit.mdnrnn.reward.weight[0].detach().double().numpy(), weight, atol=1e-4)
    assert refit.mdnrnn.reward.bias.item() == pytest.approx(0.3, abs=1e-4)
    before, after = model.state_dict(), refit.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("mdnrnn.reward."))
    assert refit.provenance["reward_head"]["fit_episodes"] == 6
    assert json.loads((out / REPORT_FILE).read_text())["ridge"] == 1e-9


def test_a_world_model_without_a_reward_head_or_episodes_is_refused(tmp_path: Path) -> None:
    make_tiny_world_model("takecover").save(tmp_path / "takecover")
    with pytest.raises(ValueError, match="no reward head"):
        refit_reward(RefitRewardArgs(world_model=str(tmp_path / "takecover"), episodes=str(tmp_path), device="cpu"))
    make_tiny_world_model("carracing").save(tmp_path / "carracing")
    with pytest.raises(ValueError, match="no episode shards"):
        refit_reward(RefitRewardArgs(world_model=str(tmp_path / "carracing"), episodes=str(tmp_path), device="cpu"))
    with pytest.raises(SystemExit):
        main(["--world-model", "carracing", "--ridge", "-1"])
