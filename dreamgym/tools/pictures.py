"""Pictures of V: latent traversals and reconstruction grids, written as PNGs (the model card's figures).

Every picture is a grid of 64x64 cells separated by ``pad`` white pixels, so an image of R rows and C
columns is ``(R * 64 + (R - 1) * pad, C * 64 + (C - 1) * pad, 3)`` uint8.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from dreamgym.data import atomic_write
from dreamgym.games import FRAME_SHAPE
from dreamgym.models.vae import ConvVAE, frames_to_tensor, tensor_to_frames

CELL = FRAME_SHAPE[0]
DECODE_BATCH = 256


def tile(cells: np.ndarray, pad: int = 2) -> np.ndarray:
    """(R, C, 64, 64, 3) uint8 cells -> one (R*64 + (R-1)*pad, C*64 + (C-1)*pad, 3) image on white."""
    if cells.ndim != 5 or cells.shape[2:] != FRAME_SHAPE:
        raise ValueError(f"cells must have shape (R, C, 64, 64, 3), got {cells.shape}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    rows, cols = cells.shape[:2]
    step = CELL + pad
    image = np.full((rows * step - pad, cols * step - pad, 3), 255, dtype=np.uint8)
    for r in range(rows):
        for c in range(cols):
            image[r * step : r * step + CELL, c * step : c * step + CELL] = cells[r, c]
    return image


@torch.inference_mode()
def decode(vae: ConvVAE, z: torch.Tensor | np.ndarray) -> np.ndarray:
    """Latents (N, Z) -> V's pictures (N, 64, 64, 3) uint8, decoded in batches on V's device."""
    z = torch.as_tensor(z, dtype=torch.float32)
    if z.dim() != 2 or z.shape[1] != vae.config.z_size:
        raise ValueError(f"latents must have shape (N, {vae.config.z_size}), got {tuple(z.shape)}")
    device = vae.fc_decode.weight.device
    chunks = [tensor_to_frames(vae.decode(z[i : i + DECODE_BATCH].to(device))) for i in range(0, len(z), DECODE_BATCH)]
    return np.concatenate(chunks) if chunks else np.empty((0, *FRAME_SHAPE), np.uint8)


@torch.inference_mode()
def reconstruct(vae: ConvVAE, frames: np.ndarray) -> np.ndarray:
    """Real frames (N, 64, 64, 3) uint8 -> V's reconstructions from mu, (N, 64, 64, 3) uint8."""
    check_frames(frames)
    device = vae.fc_decode.weight.device
    mu = torch.cat([vae.encode(frames_to_tensor(frames[i : i + DECODE_BATCH], device))[0]
                    for i in range(0, len(frames), DECODE_BATCH)])  # fmt: skip
    return decode(vae, mu)


def check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.shape[1:] != FRAME_SHAPE:
        shape = getattr(frames, "shape", None)
        raise ValueError(f"frames must be a (N, 64, 64, 3) uint8 array, got {shape} {getattr(frames, 'dtype', '')}")
    if len(frames) == 0:
        raise ValueError("frames is empty: need at least one frame")


def _traversal_latents(z_base: torch.Tensor, dims: Sequence[int], steps: int, span: float) -> torch.Tensor:
    """(len(dims) * steps, Z): z_base with dim d moved by each of linspace(-span, span, steps)."""
    offsets = torch.linspace(-span, span, steps)
    z = z_base.expand(len(dims), steps, -1).clone()
    for row, d in enumerate(dims):
        z[row, :, d] += offsets
    return z.reshape(-1, z_base.shape[-1])


def _check_base(vae: ConvVAE, z_base: torch.Tensor | np.ndarray) -> torch.Tensor:
    """z_base (Z,) or (1, Z) -> a (Z,) float32 CPU tensor, or ValueError."""
    z = torch.as_tensor(z_base, dtype=torch.float32).detach().cpu()
    if z.dim() == 2 and z.shape[0] == 1:
        z = z[0]
    if tuple(z.shape) != (vae.config.z_size,):
        raise ValueError(f"z_base must have shape ({vae.config.z_size},), got {tuple(z.shape)}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("z_base contains NaN or inf")
    return z


def rank_dims(vae: ConvVAE, z_base: torch.Tensor | np.ndarray, span: float = 3.0) -> list[int]:
    """Latent dims ordered by how much the picture changes between z_d - span and z_d + span (largest first)."""
    z = _check_base(vae, z_base)
    pictures = decode(vae, _traversal_latents(z, range(z.shape[0]), 2, span)).astype(np.float32)
    change = np.abs(pictures[0::2] - pictures[1::2]).mean(axis=(1, 2, 3))  # (Z,)
    return [int(d) for d in np.argsort(-change, kind="stable")]


def latent_traversal(
    vae: ConvVAE,
    z_base: torch.Tensor | np.ndarray,
    dims: Sequence[int] | None = None,
    steps: int = 7,
    span: float = 3.0,
    pad: int = 2,
) -> np.ndarray:
    """One row per latent dim in ``dims`` (default: all): decode z_base with that dim moved by
    ``linspace(-span, span, steps)``, the others fixed. With odd ``steps`` the middle column is z_base itself.

    Returns a (len(dims)*64 + (len(dims)-1)*pad, steps*64 + (steps-1)*pad, 3) uint8 image.
    """
    z = _check_base(vae, z_base)
    dims = list(range(z.shape[0])) if dims is None else [int(d) for d in dims]
    if not dims:
        raise ValueError("dims is empty: name at least one latent dimension")
    bad = [d for d in dims if not 0 <= d < z.shape[0]]
    if bad:
        raise ValueError(f"latent dims {bad} are out of range for z_size {z.shape[0]}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    if not (np.isfinite(span) and span > 0):
        raise ValueError(f"span must be finite and > 0, got {span}")
    pictures = decode(vae, _traversal_latents(z, dims, steps, span))
    return tile(pictures.reshape(len(dims), steps, *FRAME_SHAPE), pad)


def reconstruction_grid(vae: ConvVAE, frames: np.ndarray, columns: int = 8, pad: int = 2) -> np.ndarray:
    """Real frames over V's reconstructions: row pairs (originals, reconstructions) of ``columns`` cells.

    N frames give 2 * ceil(N / columns) rows of min(N, columns) cells; unused cells of the last pair are white.
    """
    check_frames(frames)
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    recon = reconstruct(vae, frames)
    cols = min(columns, len(frames))
    pairs = -(-len(frames) // cols)
    cells = np.full((pairs, 2, cols, *FRAME_SHAPE), 255, dtype=np.uint8)
    for i in range(len(frames)):
        cells[i // cols, 0, i % cols] = frames[i]
        cells[i // cols, 1, i % cols] = recon[i]
    return tile(cells.reshape(2 * pairs, cols, *FRAME_SHAPE), pad)


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes an (H, W, 3) uint8 image as PNG, atomically."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be an (H, W, 3) uint8 array, got {getattr(image, 'shape', type(image))}")
    atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))
