"""Train V, the ConvVAE, on every frame of the collected episodes.

    python -m training.vae --episodes data/takecover --out runs/takecover/vae --epochs 10 --device auto

Adam, batches of shuffled frames, summed squared pixel error + KL floored at ``kl_tolerance * z_size``
(the paper's "free bits"). After each epoch it writes ``recon_epoch_NNN.png`` (held-out frames on the top
row, their reconstructions from mu below) and held-out metrics; see :mod:`training.common` for the run
folder, checkpoints and resuming (rerun the same command after a kill).

Data-parallel on K processes (DDP; gloo on CPU, NCCL on GPUs, one GPU per process) on one machine, or on
two machines (the same command on each; HOST:PORT is reachable from both, e.g. the first machine's)::

    torchrun --standalone --nproc_per_node K -m training.vae --episodes data/takecover --out runs/takecover/vae
    torchrun --nnodes 2 --nproc_per_node K --rdzv_backend c10d --rdzv_endpoint HOST:PORT -m training.vae ...

``--batch-size`` stays the global batch: each process trains on its 1/K of every batch (the frames of each
batch are read by all, converted and run by one), so K processes take the same steps as one, up to float
rounding. Rank 0 alone writes the run folder, which (like ``--episodes``) must be the same path on every
machine (a shared filesystem); resume by rerunning the command. See :mod:`training.distributed`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dreamgym.cli_args import Count, NonNegativeFloat, Positive, parse_args
from dreamgym.data import atomic_write, iter_frame_batches, list_episodes, load_arrays, load_episode
from dreamgym.games import get_game
from dreamgym.models.vae import ConvVAE, VAEConfig, frames_to_tensor, tensor_to_frames
from dreamgym.runs import numpy_rng, seeded_module, torch_generator

from . import distributed
from .common import SPLIT_FILE, Trainable, TrainArgs, fit, frozen_split, load_model
from .distributed import Replicated

ARCHITECTURE = "dreamgym.ConvVAE/v1"


@dataclass(frozen=True)
class VAEArgs(TrainArgs):
    out: str = "runs/takecover/vae"
    """run folder"""
    epochs: Count = 10
    """passes over the training frames (the paper's code: 10)"""
    lr: Positive = 1e-4
    """Adam learning rate (paper: 1e-4)"""
    episodes: str = "data/takecover"
    """folder of episode shards"""
    game: str = "takecover"
    """game spec (gives the default z size)"""
    z_size: Count | None = None
    """latent size (default: the game's, 64 for takecover, 32 for carracing)"""
    kl_tolerance: NonNegativeFloat = 0.5
    """KL floored at kl_tolerance * z_size"""
    batch_size: Count = 100
    """frames per batch (paper: 100)"""
    buffer_episodes: Count = 32
    """episodes mixed in memory when shuffling frames"""
    eval_frames: Count = 1024
    """held-out frames scored after each epoch (evenly spread over the held-out episodes)"""
    grid_frames: Count = 8
    """held-out frames shown in each reconstruction grid"""


def episode_lengths(paths: Sequence[Path]) -> list[int]:
    """Steps of each shard, read without decompressing its frames."""
    return [len(load_arrays(p, ("terminated",))["terminated"]) for p in paths]


def rebatch(chunks: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Re-cuts a stream of (n_i, ...) arrays into (batch_size, ...) batches (the last one may be smaller)."""
    pending: list[np.ndarray] = []
    count = 0
    for chunk in chunks:
        pending.append(chunk)
        count += len(chunk)
        while count >= batch_size:
            merged = np.concatenate(pending)
            yield merged[:batch_size]
            pending, count = [merged[batch_size:]], count - batch_size
    if count:
        yield np.concatenate(pending)


def heldout_frames(paths: Sequence[Path], count: int) -> np.ndarray:
    """(N, 64, 64, 3) uint8: ``count`` frames evenly spaced over the concatenated held-out episodes."""
    lengths = np.asarray(episode_lengths(paths))
    picks = np.unique(np.linspace(0, lengths.sum() - 1, min(count, int(lengths.sum()))).round().astype(np.int64))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    frames = []
    for i, path in enumerate(paths):
        local = picks[(picks >= starts[i]) & (picks < starts[i] + lengths[i])] - starts[i]
        if len(local):
            frames.append(load_episode(path).frames[local])
    return np.concatenate(frames)


def save_grid(path: Path, frames: np.ndarray, recon: np.ndarray, scale: int = 2) -> None:
    """PNG with ``frames`` (N, 64, 64, 3) on the top row and ``recon`` below, upscaled ``scale`` times."""
    grid = np.concatenate([np.concatenate(list(frames), axis=1), np.concatenate(list(recon), axis=1)], axis=0)
    image = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


@torch.inference_mode()
def evaluate(model: ConvVAE, frames: np.ndarray, device: torch.device, batch_size: int = 256) -> dict[str, float]:
    """Held-out reconstruction MSE per pixel (decoding mu) and mean KL per frame."""
    model.eval()
    sq_err, kl, n = 0.0, 0.0, 0
    for start in range(0, len(frames), batch_size):
        x = frames_to_tensor(frames[start : start + batch_size], device)
        mu, logvar = model.encode(x)
        sq_err += (model.decode(mu) - x).pow(2).sum().item()
        kl += (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()).item()
        n += len(x)
    return {"recon_mse": sq_err / (n * 3 * 64 * 64), "kl": kl / n}


def build(args: VAEArgs, out: Path, device: torch.device) -> Trainable:
    """Model, data and evaluation of one V run."""
    train, held = frozen_split(out, list_episodes(args.episodes), args.holdout, args.seed, args.max_episodes)
    num_frames = sum(episode_lengths(train))
    eval_set = heldout_frames(held, args.eval_frames)
    grid_set = eval_set[np.linspace(0, len(eval_set) - 1, min(args.grid_frames, len(eval_set))).astype(int)]
    config = VAEConfig(z_size=args.z_size or get_game(args.game).z_size, kl_tolerance=args.kl_tolerance)
    model = seeded_module(lambda: ConvVAE(config), args.seed).to(device)
    generator = torch_generator(device, args.seed, 2)

    def batches(epoch: int, start: int) -> Iterator[np.ndarray]:
        chunks = iter_frame_batches(train, args.batch_size, numpy_rng(args.seed, 3, epoch), args.buffer_episodes)
        return islice(rebatch(chunks, args.batch_size), start, None)

    forward = Replicated(model, lambda m, x, noise: m.loss(x, noise=noise))

    def loss(frames: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        # The whole global batch's noise is drawn on every rank (the generator stays in step with a single
        # process's); a rank encodes only its shard of the frames and returns its share of the batch mean.
        noise = torch.randn((len(frames), config.z_size), generator=generator, device=device)
        if not distributed.is_distributed():
            return forward(frames_to_tensor(frames, device), noise)
        part = distributed.shard(len(frames))
        value, metrics = forward(frames_to_tensor(frames[part.rows], device), noise[part.rows])
        return value * part.weight, {k: v * part.weight for k, v in metrics.items()}

    def evaluate_epoch(epoch: int) -> dict[str, float]:
        metrics = evaluate(model, eval_set, device)
        with torch.inference_mode():
            recon = model.decode(model.encode(frames_to_tensor(grid_set, device))[0])
        save_grid(out / f"recon_epoch_{epoch + 1:03d}.png", grid_set, tensor_to_frames(recon))
        return metrics

    provenance: dict[str, Any] = {"episodes": args.episodes, "train_episodes": len(train), "train_frames": num_frames,
                                  "heldout_episodes": len(held), "game": get_game(args.game).name}  # fmt: skip
    return Trainable(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=args.lr),
        batches=batches,
        num_batches=-(-num_frames // args.batch_size),
        loss=loss,
        evaluate=evaluate_epoch,
        architecture=ARCHITECTURE,
        config=config,
        provenance=provenance,
        generator=generator,
    )


def train_vae(args: VAEArgs) -> dict[str, Any]:
    """Trains (or resumes) V; returns the held-out metrics written to ``<out>/eval.json``."""
    if not list_episodes(args.episodes) and not (Path(args.out) / SPLIT_FILE).is_file():
        raise ValueError(f"no episode shards in {args.episodes!r}; collect some with `python -m training.collect`")
    return fit(args, "vae", lambda out, device: build(args, out, device))


def load_vae(folder: str | Path, device: torch.device | str = "cpu") -> ConvVAE:
    """The final V of a run folder."""
    return load_model(folder, ARCHITECTURE, VAEConfig, ConvVAE, device)


def main(argv: list[str] | None = None) -> None:
    train_vae(parse_args(VAEArgs, argv, __doc__))


if __name__ == "__main__":
    main()
