"""V training images/s and M training sequence-steps/s against a bare forward + backward of the same module.

The training candidate is one optimizer step of the real loop (``training.common``'s per-batch step:
zero_grad, the stage's loss with its logged metrics, the finite-loss check, backward, gradient clipping
for M, Adam), fed the way the stage feeds it: V gets uint8 frames converted by ``frames_to_tensor``, M gets
``training.mdnrnn.make_batch`` of in-memory latent episodes (sampling z, padding, masks). Reading episode
files from disk is not included. The baseline is ``model(x)`` summed and back-propagated, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.timing import Row, interleaved_rates, random_actions
from dreamgym.models.mdnrnn import MDNRNN
from dreamgym.models.vae import ConvVAE, frames_to_tensor
from dreamgym.world_model import WorldModelConfig
from training.common import Trainable, train_step
from training.mdnrnn import EpisodeSeries, batch_loss, make_batch


@dataclass(frozen=True)
class TrainSizes:
    vae_batch: int
    mdnrnn_batch: int
    mdnrnn_steps: int
    rounds: int
    min_time: float


def _trainable(model: torch.nn.Module, lr: float, loss: Callable, clip_grad: float | None) -> Trainable:
    """The parts of a stage that its per-batch training step uses."""
    return Trainable(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=lr),
                     batches=lambda epoch, start: iter(()), num_batches=1, loss=loss, evaluate=lambda epoch: {},
                     architecture="benchmark", config=None, provenance={}, clip_grad=clip_grad)  # fmt: skip


def vae_candidates(config: WorldModelConfig, batch: int, device: torch.device) -> dict[str, Callable[[], float]]:
    model = ConvVAE(config.vae).to(device).train()
    frames = np.random.default_rng(0).integers(0, 256, size=(batch, 64, 64, 3), dtype=np.uint8)
    generator = torch.Generator(device).manual_seed(0)
    trainable = _trainable(model, 1e-4, lambda f: model.loss(frames_to_tensor(f, device), generator), None)
    x = frames_to_tensor(frames, device)

    def train() -> float:
        train_step(trainable, frames)
        return batch

    def bare() -> float:
        recon, mu, logvar = model(x, generator)
        (recon.sum() + mu.sum() + logvar.sum()).backward()
        return batch

    return {"train": train, "bare": bare}


def synthetic_episodes(config: WorldModelConfig, count: int, steps: int) -> list[EpisodeSeries]:
    """``count`` random latent episodes of ``steps`` steps each with random actions, ending in a death."""
    rng = np.random.default_rng(0)
    z = config.mdnrnn.z_size
    done = np.zeros(steps, bool)
    done[-1] = True
    return [
        EpisodeSeries(rng.normal(size=(steps + 1, z)).astype(np.float32), np.full((steps + 1, z), -2.0, np.float32),
                      random_actions(config.game, steps, seed), np.zeros(steps, np.float32), done)
        for seed in range(count)
    ]  # fmt: skip


def mdnrnn_candidates(config: WorldModelConfig, batch: int, steps: int,
                      device: torch.device) -> dict[str, Callable[[], float]]:  # fmt: skip
    model = MDNRNN(config.mdnrnn).to(device).train()
    episodes = synthetic_episodes(config, batch, steps)
    generator = torch.Generator().manual_seed(0)
    trainable = _trainable(model, 1e-3, lambda b: batch_loss(model, b), 1.0)
    fixed = make_batch(episodes, config.game, generator, device)

    def train() -> float:
        train_step(trainable, make_batch(episodes, config.game, generator, device))
        return batch * steps

    def bare() -> float:
        out, _ = model(fixed["z"][:, :-1], fixed["action"], fixed["restart"])
        sum(t.sum() for t in out).backward()
        return batch * steps

    return {"train": train, "bare": bare}


def run(config: WorldModelConfig, sizes: TrainSizes, device: torch.device) -> list[Row]:
    out = []
    for name, unit, candidates in (
        ("V", "images/s", vae_candidates(config, sizes.vae_batch, device)),
        ("M", "sequence-steps/s", mdnrnn_candidates(config, sizes.mdnrnn_batch, sizes.mdnrnn_steps, device)),
    ):
        rates = interleaved_rates(candidates, sizes.rounds, sizes.min_time, device)
        shape = f"batch {sizes.vae_batch}" if name == "V" else f"{sizes.mdnrnn_batch} x {sizes.mdnrnn_steps} steps"
        train, bare = rates["train"], rates["bare"]
        out.append(Row(f"train_{config.game}", f"{name} training {unit}", train.median, unit,
                       f"bare {name} forward + backward", bare.median, train.median / bare.median, None, shape,
                       train.spread_to(bare)))  # fmt: skip
    return out
