"""Train M, the MDN-RNN, on the latent series written by ``training.encode``.

    python -m training.mdnrnn --latents data/latents/vae --out runs/takecover/mdnrnn --epochs 40

Every training row is a whole episode from its first step (h = 0 there and only there, as in the dream),
zero-padded to the longest episode of its batch (batches group episodes of similar length) and cut after
``--seq-len`` steps; TakeCover's random episodes average ~320 steps (99 % under ~820), so the default
1,000 cuts few of them, and a cut episode simply loses its end (its death is never seen). Step t feeds [z_t, action_t,
restart_t] and is scored on z_{t+1} (MDN NLL per latent dim; absent after an episode's last step), on
done_t (BCE with the positive class weighted by ``--done-pos-weight``) and, for games with a reward head,
on reward_t. z is sampled from V's (mu, sigma) with a generator seeded by (seed, epoch, batch), so each
epoch sees fresh samples and a resumed run draws the same ones. Adam with an exponential decay from
``--lr`` to ``--min-lr`` over the run, gradient norm clipped. Held-out metrics (eval.json): next-z NLL
per dim, done precision / recall / F1 and reward MSE.

A fresh M starts its done and reward heads at the training data's priors (bias = the weighted log-odds of
a done step, the mean reward), so that the heads are right on average from the first step: left at zero, the
done head of an undertrained M says P(done) ~ 0.07 at every episode's first steps (where h is still near
zero), and a CarRacing dream (3 deaths in 275 episodes) ended a fifth of its episodes within five steps.

Done rule: the dream samples done from ``MDNRNN.done_probability(logit) = sigmoid(logit - log w)`` (w the
positive weight), which undoes the weighting; ``done_*`` metrics threshold that probability at 0.5
(logit > log w), ``done_*_logit0`` the paper's raw rule (logit > 0).

Data-parallel on K processes (DDP; gloo on CPU, NCCL on GPUs, one GPU per process) on one machine, or on
two machines (the same command on each; HOST:PORT is reachable from both, e.g. the first machine's)::

    torchrun --standalone --nproc_per_node K -m training.mdnrnn --latents data/latents/vae --out runs/takecover/mdnrnn
    torchrun --nnodes 2 --nproc_per_node K --rdzv_backend c10d --rdzv_endpoint HOST:PORT -m training.mdnrnn ...

``--batch-size`` stays the global batch of episodes: each process pads and runs every K-th episode of each
batch (with the z noise one process would draw for it), and the losses are normalised by the whole batch's
step counts, so K processes take the same steps as one, up to float rounding. Rank 0 alone writes the run
folder, which (like ``--latents``) must be the same path on every machine (a shared filesystem); resume by
rerunning the command. See :mod:`training.distributed`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamgym.checkpoint import CheckpointError, load_json
from dreamgym.cli_args import Count, DropRate, Positive, parse_args
from dreamgym.data import list_episodes, pad_episodes
from dreamgym.games import get_game
from dreamgym.models.mdnrnn import MDNRNN, MDNRNNConfig, mixture_nll
from dreamgym.runs import numpy_rng, seeded_module, torch_generator
from dreamgym.world_model import WorldModel, WorldModelConfig, resolve_bundle

from . import distributed
from .common import (
    CONFIG_FILE,
    SPLIT_FILE,
    Trainable,
    TrainArgs,
    fit,
    frozen_split,
    inherited_split,
    load_model,
    total_steps,
)
from .distributed import Replicated
from .encode import Latents, load_latents

ARCHITECTURE = "dreamgym.MDNRNN/v1"
Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class MDNRNNArgs(TrainArgs):
    out: str = "runs/takecover/mdnrnn"
    """run folder"""
    epochs: Count = 40
    """passes over the training episodes"""
    lr: Positive = 1e-3
    """initial Adam learning rate"""
    latents: str = "data/latents/vae"
    """folder written by training.encode"""
    game: str = "takecover"
    """game spec (action encoding, restart flag, reward head, default LSTM size)"""
    hidden_size: Count | None = None
    """LSTM units (default: the game's, 512 for takecover)"""
    num_mixtures: Count = 5
    """Gaussians per latent dimension"""
    done_pos_weight: Positive = 10.0
    """positive class weight of the done BCE (the paper's TakeCover: 10)"""
    dropout: DropRate = 0.0
    """dropout on h before M's heads, in [0, 1); the dream then samples masks at this rate by default"""
    seq_len: Count = 1000
    """steps per training row, from the episode start; longer episodes are cut"""
    batch_size: Count = 32
    """episodes per batch"""
    min_lr: Positive = 1e-5
    """learning rate reached at the last step (exponential decay)"""
    clip_grad: Positive = 1.0
    """gradient norm clip"""
    length_pool: Count = 50
    """batches per pool sorted by episode length, so a batch pads little (1: plain shuffle)"""
    init_from: str | None = None
    """M run folder to continue from (the World Models iteration: retrain M on old + new episodes): its
    final weights start this run and its held-out episodes stay held out; or a world-model bundle folder or
    shipped name, whose M starts this run (its episodes are not known, so the split is drawn afresh)"""


@dataclass(frozen=True)
class EpisodeSeries:
    """The parts of one encoded episode M trains on: latents of T frames, T' <= T steps (T' < T once cut)."""

    mu: np.ndarray  # (T, Z)
    logvar: np.ndarray  # (T, Z)
    actions: np.ndarray  # (T', ...)
    rewards: np.ndarray  # (T',)
    done: np.ndarray  # (T',) terminated flags

    @classmethod
    def from_latents(cls, latents: Latents) -> EpisodeSeries:
        return cls(latents.mu, latents.logvar, latents.actions, latents.rewards, latents.terminated)

    def cut(self, seq_len: int) -> EpisodeSeries:
        """The first ``seq_len`` steps (and the latent after the last of them, the target of its prediction)."""
        s = seq_len
        return EpisodeSeries(self.mu[: s + 1], self.logvar[: s + 1], self.actions[:s], self.rewards[:s], self.done[:s])


def make_batch(
    episodes: Sequence[EpisodeSeries],
    game: str,
    generator: torch.Generator,
    device: torch.device,
    part: distributed.Shard | None = None,
) -> Batch:
    """Pads whole episodes from their first step into one batch; z sampled from (mu, sigma) with ``generator``.

    Keys: z (B, L+1, Z), action (B, L, A), restart (B, L), reward (B, L), done (B, L), step_mask (B, L) where
    step t is real, z_mask (B, L) where z_{t+1} exists. L is the longest (cut) episode of the batch.

    With ``part`` (a rank's shard of this global batch) only its rows are made, with the noise the whole batch
    would give them; a stand-in shard's row has all-false masks, so it adds nothing to the loss.
    """
    length = max(len(e.actions) for e in episodes)
    z_size = episodes[0].mu.shape[1]
    noise = torch.randn((len(episodes), length + 1, z_size), generator=generator)
    if part is not None:
        episodes, noise = episodes[part.rows], noise[part.rows]
        length = max(len(e.actions) for e in episodes)
        noise = noise[:, : length + 1]
    mu, z_mask = pad_episodes([e.mu for e in episodes], length + 1)
    logvar, _ = pad_episodes([e.logvar for e in episodes], length + 1)
    actions, step_mask = pad_episodes([e.actions for e in episodes], length)
    rewards, _ = pad_episodes([e.rewards for e in episodes], length)
    done, _ = pad_episodes([e.done for e in episodes], length)
    if part is not None and part.empty:
        z_mask[:], step_mask[:] = False, False
    mu_t, logvar_t = torch.from_numpy(mu), torch.from_numpy(logvar)
    z = mu_t + torch.exp(0.5 * logvar_t) * noise
    restart = torch.zeros(step_mask.shape)
    restart[:, 0] = 1.0
    action = get_game(game).encode_action(torch.from_numpy(actions).reshape(-1, *actions.shape[2:]))
    batch = {
        "z": z, "action": action.reshape(*actions.shape[:2], -1), "restart": restart,
        "reward": torch.from_numpy(rewards.astype(np.float32)), "done": torch.from_numpy(done.astype(np.float32)),
        "step_mask": torch.from_numpy(step_mask), "z_mask": torch.from_numpy(z_mask[:, 1:]),
    }  # fmt: skip
    return {k: v.to(device) for k, v in batch.items()}


def epoch_batches(lengths: np.ndarray, batch_size: int, pool: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Episode indices of each batch of one epoch, ceil(N / batch_size) batches in random order.

    Episodes are shuffled, then sorted by length within pools of ``pool`` batches: a batch's episodes have
    similar lengths, so padding to the longest costs little (random batches of TakeCover episodes waste
    about 2.3x the compute), while every epoch still mixes episodes differently.
    """
    order = rng.permutation(len(lengths))
    batches: list[np.ndarray] = []
    for start in range(0, len(order), batch_size * pool):
        chunk = order[start : start + batch_size * pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def batch_loss(
    model: MDNRNN, batch: Batch, totals: tuple[torch.Tensor, torch.Tensor] | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """M's loss on ``batch``; ``totals`` (targets, steps) of the global batch when ``batch`` is a shard of it."""
    out, _ = model(batch["z"][:, :-1], batch["action"], batch["restart"])
    z_total, step_total = totals if totals is not None else (None, None)
    return model.loss(out, batch["z"][:, 1:], batch["z_mask"], batch["reward"], batch["done"], batch["step_mask"],
                      z_total, step_total)  # fmt: skip


def sharded_loss(forward: Replicated) -> Callable[[Batch], tuple[torch.Tensor, dict[str, float]]]:
    """The loss of a batch (one rank's shard under torchrun: its share, normalised by the global counts)."""

    def loss(batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        if not distributed.is_distributed():
            return forward(batch)
        counts = torch.stack([batch["z_mask"].sum(), batch["step_mask"].sum()]).to(torch.float32)
        z_total, step_total = distributed.sum_tensor(counts).clamp(min=1).unbind()
        return forward(batch, (z_total, step_total))

    return loss


def f1_scores(predicted: torch.Tensor, actual: torch.Tensor, suffix: str = "") -> dict[str, float]:
    """Precision, recall and F1 of boolean predictions (1-D tensors)."""
    hits = float((predicted & actual).sum())
    precision = hits / max(1.0, float(predicted.sum()))
    recall = hits / max(1.0, float(actual.sum()))
    f1 = 2 * precision * recall / max(1e-12, precision + recall)
    return {f"done_precision{suffix}": precision, f"done_recall{suffix}": recall, f"done_f1{suffix}": f1}


@torch.inference_mode()
def evaluate(model: MDNRNN, batches: Sequence[Batch]) -> dict[str, float]:
    """Held-out next-z NLL per latent dim, done precision/recall/F1 (calibrated and raw rules), reward MSE."""
    model.eval()
    nll_sum, nll_n, probs, logits, actual, sq_err = 0.0, 0.0, [], [], [], 0.0
    for batch in batches:
        out, _ = model(batch["z"][:, :-1], batch["action"], batch["restart"])
        z_mask, step = batch["z_mask"], batch["step_mask"]
        nll_sum += float(mixture_nll(out, batch["z"][:, 1:]).mean(-1)[z_mask].sum())
        nll_n += float(z_mask.sum())
        probs.append(model.done_probability(out.done_logit)[step])
        logits.append(out.done_logit[step])
        actual.append(batch["done"][step] > 0.5)
        sq_err += float((out.reward - batch["reward"])[step].pow(2).sum())
    p, logit, done = torch.cat(probs), torch.cat(logits), torch.cat(actual)
    metrics = {"nll": nll_sum / max(1.0, nll_n), **f1_scores(p > 0.5, done), **f1_scores(logit > 0, done, "_logit0")}
    metrics["done_rate_true"] = float(done.float().mean())
    metrics["done_rate_predicted"] = float(p.mean())
    if model.config.reward_head:
        metrics["reward_mse"] = sq_err / len(done)
    return metrics


def load_series(paths: Sequence[Path], seq_len: int) -> list[EpisodeSeries]:
    return [EpisodeSeries.from_latents(load_latents(p)).cut(seq_len) for p in paths]


def init_head_biases(model: MDNRNN, episodes: Sequence[EpisodeSeries]) -> None:
    """Sets the done head's bias to log(w) + logit(done rate) and the reward head's to the mean reward."""
    steps = sum(len(e.done) for e in episodes)
    rate = float(np.clip(sum(float(e.done.sum()) for e in episodes) / max(steps, 1), 1e-5, 0.5))
    with torch.no_grad():
        if model.done is not None:
            model.done.bias.fill_(math.log(model.config.done_pos_weight) + math.log(rate / (1.0 - rate)))
        if model.reward is not None:
            model.reward.bias.fill_(sum(float(e.rewards.sum()) for e in episodes) / max(steps, 1))


def build(args: MDNRNNArgs, out: Path, device: torch.device) -> Trainable:
    """Model, data and evaluation of one M run."""
    paths = list_episodes(args.latents)
    if args.init_from is not None and is_run_folder(args.init_from):
        inherited_split(out, Path(args.init_from), paths, args.holdout, args.seed)
    train_paths, held_paths = frozen_split(out, paths, args.holdout, args.seed, args.max_episodes)
    train, held = load_series(train_paths, args.seq_len), load_series(held_paths, args.seq_len)
    overrides: dict[str, Any] = {"z_size": train[0].mu.shape[1], "num_mixtures": args.num_mixtures,
                                 "done_pos_weight": args.done_pos_weight, "dropout": args.dropout}  # fmt: skip
    if args.hidden_size is not None:
        overrides["hidden_size"] = args.hidden_size
    config = WorldModelConfig.for_game(args.game, **overrides).mdnrnn
    model = seeded_module(lambda: MDNRNN(config), args.seed).to(device)
    if args.init_from is not None:
        parent = load_parent(args.init_from)
        if dataclasses.replace(parent.config, dropout=config.dropout) != config:  # dropout has no weights
            raise CheckpointError(f"--init-from {args.init_from}: its M config {parent.config} differs from {config}")
        model.load_state_dict(parent.state_dict())
    else:
        init_head_biases(model, train)
    num_batches = -(-len(train) // args.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps = max(1, total_steps(args, num_batches))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=(args.min_lr / args.lr) ** (1.0 / steps))
    eval_gen = torch_generator(torch.device("cpu"), args.seed, 5)
    eval_batches = [make_batch(held[i : i + args.batch_size], args.game, eval_gen, device)
                    for i in range(0, len(held), args.batch_size)]  # fmt: skip

    lengths = np.asarray([len(e.actions) for e in train])

    def batches(epoch: int, start: int) -> Iterator[Batch]:
        order = epoch_batches(lengths, args.batch_size, args.length_pool, numpy_rng(args.seed, 3, epoch))
        for b in range(start, num_batches):
            rows = [train[i] for i in order[b]]
            part = distributed.shard(len(rows)) if distributed.is_distributed() else None
            generator = torch_generator(torch.device("cpu"), args.seed, 4, epoch, b)
            yield make_batch(rows, args.game, generator, device, part)

    provenance = {"latents": args.latents, "game": get_game(args.game).name, "train_episodes": len(train),
                  "heldout_episodes": len(held), "init_from": args.init_from}  # fmt: skip
    return Trainable(
        model=model,
        optimizer=optimizer,
        batches=batches,
        num_batches=num_batches,
        loss=sharded_loss(Replicated(model, batch_loss)),
        evaluate=lambda epoch: evaluate(model, eval_batches),
        architecture=ARCHITECTURE,
        config=config,
        provenance=provenance,
        scheduler=scheduler,
        clip_grad=args.clip_grad,
    )


def train_mdnrnn(args: MDNRNNArgs) -> dict[str, Any]:
    """Trains (or resumes) M; returns the held-out metrics written to ``<out>/eval.json``."""
    if not (0 < args.min_lr <= args.lr):
        raise ValueError(f"need 0 < --min-lr <= --lr, got {args.min_lr} and {args.lr}")
    if min(args.seq_len, args.batch_size, args.length_pool) < 1:
        raise ValueError(f"--seq-len, --batch-size and --length-pool must be >= 1, got {args.seq_len}, "
                         f"{args.batch_size} and {args.length_pool}")  # fmt: skip
    if not list_episodes(args.latents) and not (Path(args.out) / SPLIT_FILE).is_file():
        raise ValueError(f"no latent files in {args.latents!r}; write them with `python -m training.encode`")
    return fit(args, "mdnrnn", lambda out, device: build(args, out, device))


def load_mdnrnn(folder: str | Path, device: torch.device | str = "cpu") -> MDNRNN:
    """The final M of a run folder."""
    return load_model(folder, ARCHITECTURE, MDNRNNConfig, MDNRNN, device)


def is_run_folder(name: str) -> bool:
    """Whether ``name`` is an M run folder (its config names M's architecture), not a world-model bundle."""
    config = Path(name) / CONFIG_FILE
    return config.is_file() and load_json(config).get("architecture") == ARCHITECTURE


def load_parent(name: str) -> MDNRNN:
    """The M that ``--init-from`` names: an M run folder's, or a bundle folder's or shipped bundle's."""
    if is_run_folder(name):
        return load_mdnrnn(name)
    try:
        return WorldModel.load(resolve_bundle(name)).mdnrnn
    except FileNotFoundError as err:
        raise FileNotFoundError(f"--init-from {name!r} is neither an M run folder nor a bundle ({err})") from None


def main(argv: list[str] | None = None) -> None:
    train_mdnrnn(parse_args(MDNRNNArgs, argv, __doc__))


if __name__ == "__main__":
    main()
