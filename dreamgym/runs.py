"""Run helpers every script shares: CPU threads, seeded generators and modules, and a run folder's args.json.

They live in the library so that world-model stages (``training``), controller scripts (``agents``) and the
recipes that chain them share one implementation without importing each other.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from dreamgym.checkpoint import load_json, save_json
from dreamgym.cli_args import Count, NonNegative

ARGS_FILE = "args.json"

Stage = TypeVar("Stage")

# Settings that may change between a run and its resume without changing its result.
VOLATILE_ARGS = frozenset({"device", "threads", "checkpoint_minutes", "checkpoint_steps", "log_every"})


def set_threads(threads: int | None) -> None:
    """Sets torch's CPU threads (``None``: leave torch's own choice)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def seeded_module(build: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """Builds a module whose initial weights depend only on ``seed``, leaving torch's global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def numpy_rng(*keys: int) -> np.random.Generator:
    """A generator determined by ``keys`` (e.g. seed, epoch): data order never depends on run history."""
    return np.random.default_rng(np.random.SeedSequence(list(keys)))


def torch_generator(device: torch.device, *keys: int) -> torch.Generator:
    """A torch generator on ``device`` seeded from ``keys``."""
    seed = int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(seed)


def check_args(out: Path, args: Any, volatile: frozenset[str] = VOLATILE_ARGS) -> None:
    """Records ``args`` in a new run folder, or checks a resumed run has the same result-defining settings
    (all but ``volatile``, the ones that may change between starts)."""
    current = {k: v for k, v in dataclasses.asdict(args).items() if k not in volatile}
    path = out / ARGS_FILE
    if path.is_file():
        saved = {k: v for k, v in load_json(path).items() if k not in volatile}
        diff = {k: (saved[k], current[k]) for k in saved.keys() & current.keys() if saved[k] != current[k]}
        if diff:
            changes = ", ".join(f"{k}: run has {a!r}, command has {b!r}" for k, (a, b) in sorted(diff.items()))
            raise ValueError(f"{out} holds a run with other settings ({changes}); resume with the same settings "
                             "or choose a new --out")  # fmt: skip
    else:
        save_json(path, dataclasses.asdict(args))


@dataclass(frozen=True)
class Seeded:
    """A run's seed."""

    seed: NonNegative = 0
    """seed of the run (and of the stages it drives)"""


@dataclass(frozen=True)
class Compute:
    """Where a run's torch work goes."""

    device: str = "auto"
    """cpu, cuda, cuda:N or auto"""
    threads: Count | None = None
    """torch CPU threads of this process (default: torch's)"""


@dataclass(frozen=True)
class Pooled:
    """How many processes play real games for a run."""

    workers: Count = 2
    """worker processes playing real games"""


@dataclass(frozen=True)
class RunArgs(Pooled, Compute, Seeded):
    """What a run is told besides its own sizes: its folder, seed and the compute it may use.

    The ``Args`` of scripts that drive other stages inherit it; a stage's ``Args`` inherit the parts it has
    (:class:`Seeded`, :class:`Compute`, :class:`Pooled`), so every stage spells these flags alike. A subclass
    redeclares a field to change its default; :func:`hand_down` passes the settings on to the stages a run drives.
    """

    out: str | None = None
    """run folder"""


RUN_SETTINGS = ("seed", "device", "threads", "workers")
"""the settings of a :class:`RunArgs` that the stages it drives share (each stage has its own ``out``)"""


def hand_down(stage: Stage, run: RunArgs, **fields: Any) -> Stage:
    """``stage`` (a stage's frozen ``Args``) with ``run``'s settings that it has, then ``fields``, replaced."""
    names = {f.name for f in dataclasses.fields(typing.cast(Any, stage))}
    settings = {name: getattr(run, name) for name in RUN_SETTINGS if name in names}
    return dataclasses.replace(typing.cast(Any, stage), **{**settings, **fields})
