"""Shipping: fp16 bundle + controllers + checksums in one folder, loadable by name, tampering detected."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import pytest
import torch

import dreamgym  # noqa: F401  (registers the ids)
from dreamgym import pretrained
from dreamgym.controller import Controller, ControllerConfig
from dreamgym.world_model import WorldModel
from training.ship import ShipArgs, parse_controllers, rounding_error, ship


def tiny_controller(bundle: Path, folder: Path, seed: int) -> Path:
    env = gym.make("dreamgym/TakeCoverDream-v0", world_model=str(bundle))
    config = ControllerConfig.for_env(env.unwrapped)
    env.close()
    params = torch.randn(config.n_params, generator=torch.Generator().manual_seed(seed))
    return Controller(config, params.numpy()).save(folder)


@pytest.fixture
def shipped_folder(tiny_bundle: Callable[..., Path], tmp_path: Path) -> Path:
    bundle = tiny_bundle("takecover")
    a = tiny_controller(bundle, tmp_path / "ctrl_a", 0)
    report = {"env": "dreamgym/TakeCoverLatent-v0", "mean": 812.5, "std": 3.25, "episodes": 2, "seeds": [7, 8]}
    (a / "evaluation_real.json").write_text(json.dumps(report))
    (tmp_path / "look.gif").write_bytes(b"GIF89a")
    b = tiny_controller(bundle, tmp_path / "ctrl_b", 1)
    dest = tmp_path / "pretrained" / "takecover"
    ship(ShipArgs(world_model=str(bundle), controllers=f"alpha={a},beta={b}", default="beta",
                  extras=str(tmp_path / "look.gif"), dest=str(dest)))  # fmt: skip
    return dest


def test_shipped_folder_loads_and_matches_its_checksums(shipped_folder: Path, tiny_bundle) -> None:
    assert pretrained.verify_checksums(shipped_folder) == []
    assert (shipped_folder / "MODEL_CARD.md").is_file() and (shipped_folder / "traversal.png").is_file()
    assert (shipped_folder / "controllers" / "alpha" / "evaluation_real.json").is_file()
    card = (shipped_folder / "MODEL_CARD.md").read_text()
    assert 'world_model="takecover"' not in card  # shipped to a test folder, not dreamgym/pretrained
    assert "dreamgym/TakeCoverLatent-v0 {}: 812.5 ± 3.2 over 2 episodes, seeds 7..8" in card
    assert "`beta` (default)" in card and "![look](look.gif)" in card and (shipped_folder / "look.gif").is_file()
    original = WorldModel.load(tiny_bundle("takecover"))
    loaded = WorldModel.load(shipped_folder)
    for key, value in original.state_dict().items():
        # fp16 on disk, float32 in memory, equal to the fp16 rounding of the original
        assert loaded.state_dict()[key].dtype == torch.float32
        torch.testing.assert_close(loaded.state_dict()[key], value.half().float(), rtol=0, atol=0)
    assert set(loaded.provenance["rounding_error"]) == {"pixels", "mixture_mu", "mixture_log_pi", "done_probability"}


def test_shipped_controllers_by_name(shipped_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", shipped_folder.parent)
    assert pretrained.shipped_controller_names("takecover") == ["alpha", "beta"]
    env = gym.make("dreamgym/TakeCoverDream-v0", world_model=str(shipped_folder))
    default = pretrained.shipped_controller("takecover", env=env)
    beta = Controller.load(shipped_folder / "controllers" / "beta")
    assert (default.params == beta.params).all()
    with pytest.raises(FileNotFoundError, match="ships no controller 'gamma'.*alpha"):
        pretrained.shipped_controller("takecover", "gamma")
    with pytest.raises(FileNotFoundError, match="no shipped files for game 'carracing'"):
        pretrained.shipped_controller("carracing")


def test_checksums_catch_changed_missing_and_extra_files(shipped_folder: Path) -> None:
    weights = shipped_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    (shipped_folder / "traversal.png").unlink()
    (shipped_folder / "stray.txt").write_text("x")
    problems = pretrained.verify_checksums(shipped_folder)
    assert problems == ["traversal.png: missing", "stray.txt: not in SHA256SUMS", "model.safetensors: checksum differs"]


def test_reshipping_replaces_the_folder_and_a_failed_ship_keeps_it(shipped_folder: Path, tiny_bundle) -> None:
    before = (shipped_folder / pretrained.CHECKSUM_FILE).read_text()
    with pytest.raises(ValueError, match="not among --controllers"):
        ship(ShipArgs(world_model=str(tiny_bundle("takecover")), controllers="", default="x", dest=str(shipped_folder)))
    assert (shipped_folder / pretrained.CHECKSUM_FILE).read_text() == before
    ship(ShipArgs(world_model=str(tiny_bundle("takecover", seed=1)), dest=str(shipped_folder)))
    assert not (shipped_folder / "controllers").exists() and pretrained.verify_checksums(shipped_folder) == []
    assert not list(shipped_folder.parent.glob(".takecover*"))


def test_reshipping_controllers_onto_the_shipped_bundle_keeps_its_files(shipped_folder: Path, tmp_path: Path) -> None:
    kept = ("config.json", "model.safetensors", "traversal.png")
    before = {name: (shipped_folder / name).read_bytes() for name in kept}
    card_head = (shipped_folder / "MODEL_CARD.md").read_text().split("## Shipped controllers")[0]
    gamma = tiny_controller(shipped_folder, tmp_path / "ctrl_g", 2)
    ship(ShipArgs(world_model=str(shipped_folder), controllers=f"gamma={gamma}", dest=str(shipped_folder)))
    assert {name: (shipped_folder / name).read_bytes() for name in kept} == before
    card = (shipped_folder / "MODEL_CARD.md").read_text()
    assert card.startswith(card_head) and "`gamma` (default)" in card and "`alpha`" not in card
    assert card.count("## Shipped controllers") == 1 and not (shipped_folder / "look.gif").exists()
    assert sorted(p.name for p in (shipped_folder / "controllers").iterdir()) == ["DEFAULT", "gamma"]
    assert pretrained.verify_checksums(shipped_folder) == []


def test_parse_controllers_rejects_malformed_pairs() -> None:
    assert parse_controllers("a=x, b=y/z") == {"a": Path("x"), "b": Path("y/z")}
    for bad in ("a", "=x", "a=", "a=x,a=y"):
        with pytest.raises(ValueError, match="--controllers"):
            parse_controllers(bad)


def test_rounding_error_is_zero_in_float32(tiny_bundle) -> None:
    model = WorldModel.load(tiny_bundle("takecover"))
    assert all(v == 0.0 for v in rounding_error(model, torch.float32, steps=5, batch=4).values())
    assert rounding_error(model, torch.float16, steps=5, batch=4)["mixture_mu"] > 0.0
