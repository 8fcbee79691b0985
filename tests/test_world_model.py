"""The WorldModel bundle: exact save/load, clear errors for missing, corrupt or mismatched files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_world_model
from safetensors.torch import load_file, save_file

from dreamgym.checkpoint import CHECKSUM_FILE, CheckpointError
from dreamgym.pretrained import write_checksums
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
    assert loaded.provenance == {**original.provenance, "weights_dtype": "float32"}
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
    with pytest.raises(FileNotFoundError, match="recipes.pipeline"):
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
    with pytest.raises(CheckpointError, match="vae has unknown fields \\['unknown_field'\\]"):
        WorldModel.load(folder)
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        WorldModel.load(folder)


def test_missing_tensor_is_refused(tiny_bundle: Callable[..., Path]) -> None:
    folder = tiny_bundle()
    tensors = load_file(str(folder / WEIGHTS_FILE))
    del tensors["mdnrnn.done.weight"]
    save_file(tensors, str(folder / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match="missing"):
        WorldModel.load(folder)


def edit_tensors(folder: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    tensors = load_file(str(folder / WEIGHTS_FILE))
    edit(tensors)
    save_file(tensors, str(folder / WEIGHTS_FILE))


def nan_in_m(tensors: dict[str, torch.Tensor]) -> None:
    tensors["mdnrnn.lstm.weight_hh_l0"][3, 2] = float("nan")


def cast_to_int8(tensors: dict[str, torch.Tensor]) -> None:
    tensors.update({k: v.to(torch.int8) for k, v in tensors.items()})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (nan_in_m, "'mdnrnn.lstm.weight_hh_l0' holds NaN or infinite"),
        (lambda t: t["initial_mu"].fill_(float("inf")), "'initial_mu' holds NaN or infinite"),
        (cast_to_int8, "'initial_logvar' is torch.int8, the config says torch.float32"),
    ],
)
def test_non_finite_or_recast_weights_are_refused(tiny_bundle: Callable[..., Path], edit: Callable,
                                                  message: str) -> None:  # fmt: skip
    folder = tiny_bundle()
    edit_tensors(folder, edit)
    with pytest.raises(CheckpointError, match=f"{WEIGHTS_FILE}: tensor {message}"):
        WorldModel.load(folder)


def test_8_kib_of_nan_inside_the_weights_file_is_refused(tiny_bundle: Callable[..., Path]) -> None:
    folder = tiny_bundle()
    data = bytearray((folder / WEIGHTS_FILE).read_bytes())
    start = 8 + int.from_bytes(data[:8], "little") + 4096  # past the header, into the tensor data
    data[start : start + 8192] = b"\x00\x00\xc0\x7f" * 2048  # float32 NaN
    (folder / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="tensor '.*' holds NaN"):
        WorldModel.load(folder)


def test_weights_of_another_dtype_than_the_config_names_are_refused(tmp_path: Path) -> None:
    make_tiny_world_model().save(tmp_path / "fp16", dtype=torch.float16)
    assert json.loads((tmp_path / "fp16" / CONFIG_FILE).read_text())["provenance"]["weights_dtype"] == "float16"
    edit_tensors(tmp_path / "fp16", lambda t: t.update({k: v.float() for k, v in t.items()}))
    with pytest.raises(CheckpointError, match="is torch.float32, the config says torch.float16"):
        WorldModel.load(tmp_path / "fp16")


def test_any_bundle_folder_with_sha256sums_is_checked(tiny_bundle: Callable[..., Path]) -> None:
    folder = tiny_bundle()
    write_checksums(folder)
    WorldModel.load(folder)
    data = bytearray((folder / WEIGHTS_FILE).read_bytes())
    data[-100] ^= 0x01  # one flipped bit: still loadable, finite and the right dtype
    (folder / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{WEIGHTS_FILE}: sha256 differs"):
        WorldModel.load(folder)
    (folder / CHECKSUM_FILE).write_text("")
    with pytest.raises(CheckpointError, match=f"{CONFIG_FILE}: not listed in"):
        WorldModel.load(folder)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary", b"not a checksum line\n"])
def test_unreadable_sha256sums_is_a_checkpoint_error(tiny_bundle: Callable[..., Path], content: bytes) -> None:
    folder = tiny_bundle()
    (folder / CHECKSUM_FILE).write_bytes(content)
    with pytest.raises(CheckpointError, match=CHECKSUM_FILE):
        WorldModel.load(folder)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["mdnrnn"].update(hidden_size="16"), r"mdnrnn.hidden_size must be of type int, got '16'"),
        (lambda c: c["mdnrnn"].update(done_pos_weight=-1), r"mdnrnn.done_pos_weight must be a finite number > 0"),
        (lambda c: c["mdnrnn"].update(num_mixtures=0), r"mdnrnn.num_mixtures must be an integer >= 1, got 0"),
        (lambda c: c["mdnrnn"].update(restart_flag="yes"), r"mdnrnn.restart_flag must be of type bool, got 'yes'"),
        (lambda c: c["vae"].update(kl_tolerance=-0.5), r"vae.kl_tolerance must be a finite number >= 0"),
        (lambda c: c.update(vae=[8, 0.5]), r"config.vae must be of type dict, got \[8, 0.5\]"),
        (lambda c: c.update(num_initial_latents=0), r"config.num_initial_latents must be an integer >= 1"),
        (lambda c: c.update(initial_step=-3), r"initial_step must be an integer >= 0"),
        (lambda c: c.update(game="pong"), r"config.game .*pong"),
        (lambda c: c["provenance"].update(weights_dtype="int8"), r"config.provenance.weights_dtype must be one of"),
        (lambda c: c.pop("mdnrnn"), r"config has no \['mdnrnn'\]"),
    ],
)
def test_config_fields_are_checked_on_load(tiny_bundle: Callable[..., Path], edit: Callable, message: str) -> None:
    folder = tiny_bundle()
    edit_config(folder, edit)
    with pytest.raises(CheckpointError, match=f"{CONFIG_FILE}: {message}"):
        WorldModel.load(folder)


def test_a_config_that_is_a_json_list_is_refused(tiny_bundle: Callable[..., Path]) -> None:
    folder = tiny_bundle()
    (folder / CONFIG_FILE).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="expected a JSON object, got a JSON list"):
        WorldModel.load(folder)
