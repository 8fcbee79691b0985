"""The one training loop every stage shares: devices, exact resume, logging, held-out metrics, final weights.

A stage (``training.vae``, ``training.mdnrnn``) builds a :class:`Trainable` — model, optimizer, schedule,
a seeded noise generator, a batch source that can start at any batch of any epoch, a loss and a held-out
evaluation — and hands it to :func:`fit`, which owns epochs, checkpoints, TensorBoard and the files of
the run folder::

    <out>/args.json          the settings of the run (a resume with other settings is refused)
    <out>/split.json         the training / held-out episodes, frozen at the first start
    <out>/state.safetensors  resume state: model, optimizer, schedule and generator tensors; the JSON
                             rest (data position, history, optimizer hyperparameters) in its metadata
    <out>/tb/                TensorBoard events
    <out>/model.safetensors + config.json   final weights (written when the run ends)
    <out>/eval.json          held-out metrics of the final model, plus the per-epoch history

The resume state is one safetensors file written atomically, so a run killed at any moment (SIGKILL
included) resumes from its last checkpoint by rerunning the same command, and ends with the same weights
as an uninterrupted run: data order and sampling noise are functions of (seed, epoch, batch) or of the
saved generator state, never of wall time. Rerunning a finished run is a no-op that prints its results.

Under ``torchrun`` (see :mod:`training.distributed`) every rank runs :func:`fit` on its shard of each global
batch; rank 0 alone writes the files above, evaluates and prints, and every rank restores the same state.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from dreamgym.checkpoint import (
    CheckpointError,
    load_json,
    load_state_dict,
    load_tensors,
    save_json,
    save_tensors,
    versions,
)
from dreamgym.cli_args import Count, HeldOut, NonNegativeFloat, Positive
from dreamgym.data import atomic_write, split_holdout
from dreamgym.devices import resolve_device  # noqa: F401  (re-exported: callers import it from here)
from dreamgym.runs import Compute, Seeded, check_args, numpy_rng, set_threads

from . import distributed

STATE_FILE = "state.safetensors"
SPLIT_FILE = "split.json"
EVAL_FILE = "eval.json"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TB_DIR = "tb"


@dataclass(frozen=True)
class TrainArgs(Compute, Seeded):
    """Settings every training stage has (stages subclass this with their own fields); ``--seed`` seeds the
    initialisation, the data order and the sampling noise."""

    out: str = "runs/run"
    """run folder (rerun the same command to resume; a finished run is not retrained)"""
    epochs: Count = 1
    """passes over the training episodes"""
    max_steps: Count | None = None
    """stop after this many optimizer steps (default: no cap)"""
    lr: Positive = 1e-3
    """Adam learning rate"""
    holdout: HeldOut = 0.05
    """fraction of episodes held out for evaluation"""
    max_episodes: Count | None = None
    """train on a seeded random subset of at most this many episodes (default: all)"""
    checkpoint_minutes: NonNegativeFloat = 5.0
    """save the resume state at least this often"""
    checkpoint_steps: Count | None = None
    """also save it every this many optimizer steps"""
    log_every: Count = 10
    """TensorBoard training scalars every this many steps"""


# --- run folder files ----------------------------------------------------------------------------


def frozen_split(
    out: Path, paths: Sequence[Path], holdout: float, seed: int, max_train: int | None
) -> tuple[list[Path], list[Path]]:
    """(train, held-out) episode files of the run, chosen at its first start and reused on every resume.

    Freezing the lists keeps a resumed run exact even if more episodes appeared in the data folder since.
    Under torchrun rank 0 draws and writes the split; the other ranks read it.
    """
    with distributed.main_first():
        return _frozen_split(out, paths, holdout, seed, max_train)


def _frozen_split(
    out: Path, paths: Sequence[Path], holdout: float, seed: int, max_train: int | None
) -> tuple[list[Path], list[Path]]:
    path = out / SPLIT_FILE
    if path.is_file():
        saved = load_json(path)
        return [Path(p) for p in saved["train"]], [Path(p) for p in saved["holdout"]]
    if len(paths) < 2:
        raise ValueError(f"need at least 2 episodes (one held out), found {len(paths)}")
    train, held = split_holdout(list(paths), holdout, seed)
    if not held:
        raise ValueError(f"--holdout {holdout} holds out no episode; use a fraction > 0")
    if max_train is not None and max_train < len(train):
        keep = np.sort(numpy_rng(seed, 1).choice(len(train), size=max_train, replace=False))
        train = [train[i] for i in keep]
    save_json(path, {"train": [str(p) for p in train], "holdout": [str(p) for p in held]})
    return train, held


def inherited_split(out: Path, parent: Path, paths: Sequence[Path], holdout: float, seed: int) -> None:
    """Writes ``out``'s split for a run that continues ``parent``'s: the parent's held-out episodes stay held
    out (so the child's held-out metrics are never on episodes the parent trained on), its training episodes
    stay in training, and episodes new to the folder are split with ``holdout``. No-op once the split exists."""
    with distributed.main_first():
        _inherited_split(out, parent, paths, holdout, seed)


def _inherited_split(out: Path, parent: Path, paths: Sequence[Path], holdout: float, seed: int) -> None:
    if (out / SPLIT_FILE).is_file():
        return
    if not (parent / SPLIT_FILE).is_file():
        raise ValueError(f"{parent} has no {SPLIT_FILE}: --init-from needs a run folder of the same stage")
    saved = load_json(parent / SPLIT_FILE)
    known = set(saved["train"]) | set(saved["holdout"])
    new = [p for p in paths if str(p) not in known]
    new_train, new_held = split_holdout(new, holdout, seed) if len(new) > 1 else (new, [])
    split = {"train": sorted(saved["train"] + [str(p) for p in new_train]),
             "holdout": sorted(saved["holdout"] + [str(p) for p in new_held])}  # fmt: skip
    save_json(out / SPLIT_FILE, split)


def save_model(
    folder: Path, model: torch.nn.Module, architecture: str, config: Any, provenance: dict[str, Any]
) -> None:
    """Final weights: ``model.safetensors`` + ``config.json`` (architecture, config, provenance, versions)."""
    save_tensors(folder / MODEL_FILE, model.state_dict())
    save_json(folder / CONFIG_FILE, {"architecture": architecture, "config": dataclasses.asdict(config),
                                     "provenance": provenance, "versions": versions()})  # fmt: skip


def load_model(folder: str | os.PathLike, architecture: str, config_cls: type, model_cls: type,
               device: torch.device | str = "cpu") -> torch.nn.Module:  # fmt: skip
    """Loads weights written by :func:`save_model`; a foreign or corrupt file raises CheckpointError."""
    folder = Path(folder)
    meta = load_json(folder / CONFIG_FILE, architecture)
    try:
        model = model_cls(config_cls(**meta["config"]))
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{folder / CONFIG_FILE}: malformed {architecture} config ({err})") from err
    load_state_dict(model, load_tensors(folder / MODEL_FILE), folder / MODEL_FILE)
    return model.to(device).eval()


# --- resume state -------------------------------------------------------------------------------


def _pack(obj: Any, tensors: dict[str, torch.Tensor], key: str) -> Any:
    """Nested state (dicts with any keys, tuples, tensors) -> JSON, moving tensors into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _pack(v, tensors, f"{key}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_pack(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_pack(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {key} in a run state")


def _unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors.get(obj["__tensor__"])
        if "__tuple__" in obj:
            return tuple(_unpack(v, tensors) for v in obj["__tuple__"])
        return {k: _unpack(v, tensors) for k, v in obj["__dict__"]}
    return obj


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically writes a nested state dict as one safetensors file (JSON skeleton in its metadata)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.dumps(_pack(state, tensors, "s"))
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"dreamgym_run_state": skeleton}))


def load_state(path: Path, tensors: bool = True) -> dict[str, Any]:
    """Reads :func:`save_state`'s file; ``tensors=False`` reads only the JSON part (tensors become None)."""
    try:
        with safe_open(str(path), "pt") as f:
            skeleton = json.loads((f.metadata() or {})["dreamgym_run_state"])
            values = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}  # noqa: SIM118
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt or foreign run state ({type(err).__name__}: {err})") from err
    return _unpack(skeleton, values)


@dataclass
class Progress:
    """Where a run is: epochs done, batches done in the current epoch, optimizer steps, eval history."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    seconds: float = 0.0
    """wall seconds of training up to the last checkpoint, summed over resumed runs (in provenance: train_seconds)"""
    finished: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


def run_finished(out: str | os.PathLike) -> bool:
    """Whether ``out`` holds a run that completed (its final weights and eval.json are written)."""
    path = Path(out) / STATE_FILE
    return path.is_file() and bool(load_state(path, tensors=False)["progress"]["finished"])


# --- the loop -----------------------------------------------------------------------------------


@dataclass
class Trainable:
    """What a stage hands :func:`fit`.

    ``batches(epoch, start)`` yields the epoch's batches from batch ``start`` on (the same ones on every
    call); ``loss(batch)`` returns the loss and scalar metrics; ``evaluate(epoch)`` returns held-out
    metrics (and may write files such as reconstruction grids). ``generator`` is the stage's noise source,
    saved with the run.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batches: Callable[[int, int], Iterator[Any]]
    num_batches: int
    loss: Callable[[Any], tuple[torch.Tensor, dict[str, float]]]
    evaluate: Callable[[int], dict[str, float]]
    architecture: str
    config: Any
    provenance: dict[str, Any]
    generator: torch.Generator | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    clip_grad: float | None = None


def total_steps(args: TrainArgs, num_batches: int) -> int:
    steps = args.epochs * num_batches
    return min(steps, args.max_steps) if args.max_steps is not None else steps


def _state(t: Trainable, progress: Progress) -> dict[str, Any]:
    return {
        "progress": dataclasses.asdict(progress),
        "model": t.model.state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict() if t.scheduler is not None else None,
        "generator": t.generator.get_state() if t.generator is not None else None,
    }


def _restore(t: Trainable, state: dict[str, Any]) -> Progress:
    t.model.load_state_dict(state["model"])
    t.optimizer.load_state_dict(state["optimizer"])
    if t.scheduler is not None:
        t.scheduler.load_state_dict(state["scheduler"])
    if t.generator is not None:
        t.generator.set_state(state["generator"])
    return Progress(**state["progress"])


def fit(args: TrainArgs, name: str, build: Callable[[Path, torch.device], Trainable]) -> dict[str, Any]:
    """Trains (or resumes, or skips if finished) the stage ``build`` describes; returns the final eval.json."""
    out = Path(args.out)
    device = distributed.setup(args.device)  # under torchrun: joins the process group
    main = distributed.is_main()
    with distributed.main_first():  # rank 0 writes args.json before the others check against it
        out.mkdir(parents=True, exist_ok=True)
        check_args(out, args)
    if run_finished(out):
        if main:
            print(f"{name}: already finished; weights in {out / MODEL_FILE}, metrics in {out / EVAL_FILE}")
        return load_json(out / EVAL_FILE)
    set_threads(args.threads)
    t = build(out, device)
    if t.num_batches < 1:
        raise ValueError(f"{name}: no training batches (no training episodes?)")
    progress = Progress()
    if (out / STATE_FILE).is_file():
        progress = _restore(t, load_state(out / STATE_FILE))
        if main:
            print(f"{name}: resuming at epoch {progress.epoch + 1}, batch {progress.batch}, step {progress.step}")
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / TB_DIR), purge_step=progress.step or None) if main else None
    total = total_steps(args, t.num_batches)
    last_save = time.monotonic()

    def count_time() -> None:
        """Adds the wall time since the last count to progress.seconds (saved with the next checkpoint)."""
        nonlocal last_save
        now = time.monotonic()
        progress.seconds += now - last_save
        last_save = now

    def checkpoint() -> None:
        count_time()
        if writer is not None:  # rank 0: every rank holds the same state
            save_state(out / STATE_FILE, _state(t, progress))
            writer.flush()

    def record_eval(epoch: int) -> None:
        if writer is None:  # other ranks: only rank 0 evaluates; they go on and wait in the next all-reduce
            progress.history.append({"epoch": epoch + 1, "step": progress.step})
            return
        scores = t.evaluate(epoch)
        for key, value in scores.items():
            writer.add_scalar(f"heldout/{key}", value, progress.step)
        metrics = {"epoch": epoch + 1, "step": progress.step, **scores}
        progress.history.append(metrics)
        print(f"{name}: " + ", ".join(f"{k} {v:.5g}" for k, v in metrics.items()))

    while progress.epoch < args.epochs:
        if progress.batch < t.num_batches and progress.step < total:
            bar = tqdm(
                total=t.num_batches,
                initial=progress.batch,
                desc=f"{name} epoch {progress.epoch + 1}/{args.epochs}",
                disable=not main,
            )
            for batch in t.batches(progress.epoch, progress.batch):
                metrics = train_step(t, batch)
                progress.batch += 1
                progress.step += 1
                bar.update()
                bar.set_postfix(loss=f"{metrics['loss']:.4g}", refresh=False)
                if writer is not None and progress.step % args.log_every == 0:
                    for key, value in metrics.items():
                        writer.add_scalar(f"train/{key}", value, progress.step)
                if progress.step >= total:
                    break
                if (args.checkpoint_steps and progress.step % args.checkpoint_steps == 0) or (
                    time.monotonic() - last_save >= 60 * args.checkpoint_minutes
                ):
                    checkpoint()
            bar.close()
        if progress.batch >= t.num_batches:
            record_eval(progress.epoch)
            progress.epoch += 1
            progress.batch = 0
            checkpoint()
        if progress.step >= total:
            break
    if not progress.history or progress.history[-1]["step"] != progress.step:
        record_eval(progress.epoch)
        checkpoint()
    count_time()  # train_seconds below includes the time since the last checkpoint

    if writer is not None:
        provenance = {**t.provenance, "args": dataclasses.asdict(args), "steps": progress.step,
                      "train_seconds": progress.seconds, "world_size": distributed.world_size()}  # fmt: skip
        if provenance["world_size"] == 1:
            del provenance["world_size"]
        save_model(out, t.model, t.architecture, t.config, provenance)
        save_json(out / EVAL_FILE, {**progress.history[-1], "history": progress.history})
        progress.finished = True
        checkpoint()
        writer.close()
        print(f"{name}: finished; weights in {out / MODEL_FILE}, metrics in {out / EVAL_FILE}")
    distributed.barrier()  # the other ranks return rank 0's eval.json, once written
    return load_json(out / EVAL_FILE) if writer is None else {**progress.history[-1], "history": progress.history}


def train_step(t: Trainable, batch: Any) -> dict[str, float]:
    """One optimizer step on ``batch`` (the loop's unit of work; benchmarks.train_steps times it)."""
    t.model.train()
    t.optimizer.zero_grad(set_to_none=True)
    loss, metrics = t.loss(batch)
    if distributed.is_distributed():
        # loss and metrics are this rank's shares of the global batch's; DDP averages the gradients over ranks
        metrics = distributed.all_sum(metrics, next(t.model.parameters()).device)
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(f"loss became {metrics['loss']} (metrics {metrics}); lower the learning rate")
        loss = loss * distributed.world_size()
    elif not math.isfinite(loss.item()):
        raise FloatingPointError(f"loss became {loss.item()} (metrics {metrics}); lower the learning rate")
    loss.backward()
    if t.clip_grad is not None:
        metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.clip_grad))
    t.optimizer.step()
    metrics["lr"] = t.optimizer.param_groups[0]["lr"]
    if t.scheduler is not None:
        t.scheduler.step()
    return metrics
