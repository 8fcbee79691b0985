"""The WorldModel bundle: exact save/load, clear errors for missing, corrupt or mismatched files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_world_model

from dreamgym.checkpoint import CheckpointError
from dreamgym.world_model import CONFIG_FILE, WEIGHTS_FILE, WorldModel, WorldModelConfig


def test_paper_sizes_per_game() -> None:
    takecover = WorldModelConfig.for_game("takecover")
    assert (takecover.vae.z_size, takecover.mdnrnn.hidden_size) == (64, 512)
    assert takecover.mdnrnn.restart_flag and not takecover.mdnrnn.reward_head
    carracing = WorldModelConfig.for_game("carracing")
    assert (carracing.vae.z_size, carracing.mdnrnn.hidden_size, carracing.mdnrnn.action_dim) == (32, 256, 3)
    assert carracing.mdnrnn.reward_head and not carracing.mdnrnn.restart_flag


@pytest.mark.parametrize("game", ["takecover", "carracing"])
def test_save_load_round_trip_is_bit_exact(game: str, tiny_bundle: Callable[..., Path]) -> None:
    original = make_tiny_world_model(game, seed=3)
    loaded = WorldModel.load(tiny_bundle(game, seed=3))
    assert loaded.config == original.config
    assert loaded.provenance == original.provenance
    expected = original.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_half_precision_bundle_loads_as_float32(tmp_path: Path) -> None:
    model = make_tiny_world_model()
    model.save(tmp_path / "fp16", dtype=torch.float16)
    loaded = WorldModel.load(tmp_path / "fp16")
    weight = loaded.vae.fc_mu.weight
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, model.vae.fc_mu.weight, atol=1e-3, rtol=1e-3)


def test_z_size_mismatch_between_v_and_m_is_refused() -> None:
    config = WorldModelConfig.for_game("takecover", z_size=8)  # V keeps z = 64
    with pytest.raises(ValueError, match="z_size"):
        WorldModel(config)


def test_unknown_bundle_names_the_way_out(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="training.pipeline"):
        WorldModel.load(tmp_path / "nothing_here")


def test_truncated_weights_raise_checkpoint_error(tiny_bundle: Callable[..., Path]) -> None:
    folder = tiny_bundle()
    weights = folder / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        WorldModel.load(folder)


def test_missing_weights_raise_checkpoint_error(tiny_bundle: Callable[..., Path]) -> None:
    folder = tiny_bundle()
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="not found"):
        WorldModel.load(folder)


def edit_config(folder: Path, edit: Callable[[dict], None]) -> None:
    config = json.loads((folder / CONFIG_FILE).read_text())
    edit(config)
    (folder / CONFIG_FILE).write_text(json.dumps(config))


def test_weights_for_another_architecture_size_are_refused(tiny_bundle: Callable[..., Path]) -> None:
    folder = tiny_bundle()
    edit_config(folder, lambda c: c["mdnrnn"].update(hidden_size=32))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        WorldModel.load(folder)


def test_foreign_architecture_is_refused(tiny_bundle: Callable[..., Path]) -> None:
    folder = tiny_bundle()
    edit_config(folder, lambda c: c.update(architecture="someone.Else/v9"))
    with pytest.raises(CheckpointError, match="architecture"):
        WorldModel.load(folder)


def test_malformed_config_is_refused(tiny_bundle: Callable[..., Path]) -> None:
    folder = tiny_bundle()
    edit_config(folder, lambda c: c["vae"].update(unknown_field=1))
    with pytest.raises(CheckpointError, match="malformed"):
        WorldModel.load(folder)
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        WorldModel.load(folder)


def test_missing_tensor_is_refused(tiny_bundle: Callable[..., Path]) -> None:
    from safetensors.torch import load_file, save_file

    folder = tiny_bundle()
    tensors = load_file(str(folder / WEIGHTS_FILE))
    del tensors["mdnrnn.done.weight"]
    save_file(tensors, str(folder / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match="missing"):
        WorldModel.load(folder)
