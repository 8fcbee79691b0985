"""Latent traversals, reconstruction grids, PNG writing (dreamgym.tools.pictures) and the model card using them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY_Z, make_tiny_world_model
from PIL import Image

from dreamgym.checkpoint import save_json
from dreamgym.data import Episode, episode_path, save_episode
from dreamgym.models.vae import ConvVAE, VAEConfig
from dreamgym.tools.model_card import write_model_card
from dreamgym.tools.pictures import (
    decode,
    latent_traversal,
    rank_dims,
    reconstruct,
    reconstruction_grid,
    save_png,
    tile,
)

Z = 6


def cell_at(image: np.ndarray, row: int, col: int, pad: int = 2) -> np.ndarray:
    step = 64 + pad
    return image[row * step : row * step + 64, col * step : col * step + 64]


@pytest.fixture
def vae_one_dim() -> ConvVAE:
    """A V whose pictures depend on latent dim 3 only, strongly (the other dims' decoder weights are zero)."""
    torch.manual_seed(0)
    vae = ConvVAE(VAEConfig(z_size=Z)).eval()
    with torch.no_grad():
        keep = vae.fc_decode.weight[:, 3].clone() * 40.0
        vae.fc_decode.weight.zero_()
        vae.fc_decode.weight[:, 3] = keep
    return vae


def test_tile_places_cells_on_a_white_grid() -> None:
    cells = np.arange(2 * 3, dtype=np.uint8).reshape(2, 3, 1, 1, 1) * np.ones((1, 1, 64, 64, 3), np.uint8)
    image = tile(cells, pad=2)
    assert image.shape == (2 * 64 + 2, 3 * 64 + 2 * 2, 3)
    for r in range(2):
        for c in range(3):
            assert (cell_at(image, r, c) == 3 * r + c).all()
    assert (image[64:66] == 255).all() and (image[:, 64:66] == 255).all()
    assert tile(cells, pad=0).shape == (128, 192, 3)


def test_traversal_has_one_row_per_dim_and_the_base_in_the_middle(vae_one_dim: ConvVAE) -> None:
    z_base = torch.randn(Z, generator=torch.Generator().manual_seed(1))
    image = latent_traversal(vae_one_dim, z_base, dims=[3, 0], steps=5, span=2.0)
    assert image.shape == (2 * 64 + 2, 5 * 64 + 4 * 2, 3) and image.dtype == np.uint8
    base = decode(vae_one_dim, z_base[None])[0]
    for row in range(2):
        np.testing.assert_array_equal(cell_at(image, row, 2), base)
    # Moving dim 3 changes the picture; moving dim 0 (no decoder weight) does not.
    assert not np.array_equal(cell_at(image, 0, 0), cell_at(image, 0, 4))
    for col in range(5):
        np.testing.assert_array_equal(cell_at(image, 1, col), base)


def test_traversal_defaults_to_every_dim(vae_one_dim: ConvVAE) -> None:
    image = latent_traversal(vae_one_dim, np.zeros(Z, np.float32), steps=3, pad=0)
    assert image.shape == (Z * 64, 3 * 64, 3)


def test_rank_dims_puts_the_dim_that_matters_first(vae_one_dim: ConvVAE) -> None:
    order = rank_dims(vae_one_dim, torch.zeros(1, Z))
    assert order[0] == 3 and sorted(order) == list(range(Z))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"z_base": np.zeros(Z + 1)}, "z_base must have shape"),
        ({"dims": [Z]}, "out of range"),
        ({"dims": []}, "dims is empty"),
        ({"steps": 1}, "steps must be >= 2"),
        ({"span": 0.0}, "span must be finite"),
        ({"z_base": np.full(Z, np.nan)}, "NaN"),
    ],
)
def test_traversal_rejects_bad_arguments(vae_one_dim: ConvVAE, kwargs: dict, message: str) -> None:
    args = {"z_base": np.zeros(Z, np.float32)} | kwargs
    with pytest.raises(ValueError, match=message):
        latent_traversal(vae_one_dim, **args)


def test_reconstruction_grid_pairs_frames_with_their_reconstructions(vae_one_dim: ConvVAE) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    image = reconstruction_grid(vae_one_dim, frames, columns=3)
    assert image.shape == (4 * 64 + 3 * 2, 3 * 64 + 2 * 2, 3)
    recon = reconstruct(vae_one_dim, frames)
    for i in range(5):
        pair, col = divmod(i, 3)
        np.testing.assert_array_equal(cell_at(image, 2 * pair, col), frames[i])
        np.testing.assert_array_equal(cell_at(image, 2 * pair + 1, col), recon[i])
    assert (cell_at(image, 2, 2) == 255).all() and (cell_at(image, 3, 2) == 255).all()  # unused cells
    assert reconstruction_grid(vae_one_dim, frames[:2]).shape == (2 * 64 + 2, 2 * 64 + 2, 3)


@pytest.mark.parametrize(
    "frames",
    [np.zeros((2, 64, 64, 3), np.float32), np.zeros((2, 32, 32, 3), np.uint8), np.zeros((0, 64, 64, 3), np.uint8)],
)
def test_reconstruction_grid_rejects_bad_frames(vae_one_dim: ConvVAE, frames: np.ndarray) -> None:
    with pytest.raises(ValueError, match="frames"):
        reconstruction_grid(vae_one_dim, frames)


def test_save_png_round_trips_atomically(tmp_path: Path, vae_one_dim: ConvVAE) -> None:
    image = latent_traversal(vae_one_dim, np.zeros(Z, np.float32), dims=[3], steps=4)
    path = tmp_path / "sub" / "traversal.png"
    save_png(path, image)
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), image)
    assert [p.name for p in path.parent.iterdir()] == ["traversal.png"]
    with pytest.raises(ValueError, match="uint8"):
        save_png(path, image.astype(np.float32))


# --- the model card (dreamgym.tools.model_card), which writes these pictures beside a bundle ---------------
def save_episodes(folder: Path, count: int, steps: int = 5) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        frames = rng.integers(0, 256, (steps, 64, 64, 3), dtype=np.uint8)
        flags = np.zeros(steps, bool)
        save_episode(episode_path(folder, i), Episode(frames, np.ones(steps, np.int64), np.ones(steps, np.float32),
                                                      flags, flags, i, "takecover"))  # fmt: skip
        paths.append(episode_path(folder, i))
    return paths


def fake_run(folder: Path, provenance: dict, metrics: dict) -> str:
    """A finished training-run folder as training.common writes it (config.json + eval.json)."""
    save_json(folder / "config.json", {"architecture": "x", "config": {}, "provenance": provenance})
    save_json(folder / "eval.json", {**metrics, "epoch": 1, "step": 10, "history": [metrics]})
    return str(folder)


def test_model_card_without_records_says_not_recorded(tmp_path: Path, tiny_bundle: Callable[..., Path]) -> None:
    bundle = tiny_bundle()
    save_episodes(tmp_path / "episodes", 2)
    card = write_model_card(bundle, episodes=tmp_path / "episodes", frames=3, dims=4, steps=5)
    text = card.read_text()
    assert card == bundle / "MODEL_CARD.md" and "not recorded" in text and "TakeCoverDream-v0" in text
    assert "![reconstructions](reconstructions.png)" in text and "![latent traversal](traversal.png)" in text
    assert Image.open(bundle / "traversal.png").size == (5 * 64 + 4 * 2, 4 * 64 + 3 * 2)  # (width, height)
    assert Image.open(bundle / "reconstructions.png").size == (3 * 64 + 2 * 2, 2 * 64 + 2)


def test_model_card_reads_the_training_runs(tmp_path: Path) -> None:
    held = save_episodes(tmp_path / "episodes", 2)
    vae_run, m_run = tmp_path / "vae", tmp_path / "mdnrnn"
    vae = fake_run(vae_run, {"train_frames": 123456, "train_episodes": 98, "heldout_episodes": 2, "steps": 2470,
                             "train_seconds": 5400, "args": {"epochs": 2, "batch_size": 100}},
                   {"recon_mse": 0.00123, "kl": 33.5})  # fmt: skip
    save_json(vae_run / "split.json", {"train": [], "holdout": [str(p) for p in held]})
    mdnrnn = fake_run(m_run, {"train_episodes": 97, "steps": 300}, {"nll": -1.25, "done_f1": 0.5})
    model = make_tiny_world_model()
    model.provenance.update(vae=vae, mdnrnn=mdnrnn)
    model.save(tmp_path / "bundle")
    text = write_model_card(tmp_path / "bundle", frames=2, dims=99).read_text()
    for expected in ("| V: training frames | 123,456 |", "| V: training time | 1 h 30 min |", "`recon_mse` 0.00123",
                     "`nll` -1.25", "| M: optimizer steps | 300 |", "| V: epochs / batch size | 2 / 100 |",
                     "V's held-out episodes"):  # fmt: skip
        assert expected in text
    assert "| M: training time | not recorded |" in text and "history" not in text
    assert Image.open(tmp_path / "bundle" / "traversal.png").size[1] == TINY_Z * 64 + (TINY_Z - 1) * 2  # all dims


def test_model_card_script(run_module: Callable[..., Any], tiny_bundle: Callable[..., Path]) -> None:
    bundle = tiny_bundle("carracing")
    proc = run_module("dreamgym.tools.model_card", "--world-model", str(bundle), "--dims", "2", "--steps", "3")
    assert "MODEL_CARD.md" in proc.stdout
    text = (bundle / "MODEL_CARD.md").read_text()
    assert "Reconstructions: not recorded" in text and "M's reward head" in text
    assert Image.open(bundle / "traversal.png").size == (3 * 64 + 4, 2 * 64 + 2)
    assert not (bundle / "reconstructions.png").exists()
