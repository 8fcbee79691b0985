"""Data-parallel training under ``torchrun``: the few helpers :func:`training.common.fit` and the stages share.

A stage run by ``torchrun --nproc_per_node K`` (env ``WORLD_SIZE`` > 1) joins a process group (gloo on CPU,
NCCL on CUDA with device ``cuda:LOCAL_RANK``). Every rank reads the same global batches (same seed, same
order) and computes the loss on its :func:`shard` of each, as its *share* of the global-batch loss (the
shares of all ranks sum to the loss one process would compute on the whole batch); :class:`Replicated`
runs the loss through ``DistributedDataParallel``, whose backward averages the gradients, so ``fit``
backpropagates share * world size and every rank ends each step with the single-process gradient of the
global batch (up to float rounding). Rank 0 alone writes files; all ranks restore the same checkpoint.

Without torchrun (or with one process) none of this is active and every helper is the identity.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dreamgym.devices import resolve_device


def world_size() -> int:
    """Processes training together (1 without torchrun)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    """Whether this process writes the run's files, logs and prints (rank 0)."""
    return rank() == 0


def setup(device: str) -> torch.device:
    """Resolves ``--device``; under torchrun with WORLD_SIZE > 1 also joins the process group (once).

    Distributed CUDA runs use ``cuda:LOCAL_RANK`` whatever index ``device`` names.
    """
    resolved = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return resolved
    if resolved.type == "cuda":
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=resolved if resolved.type == "cuda" else None)
        atexit.register(_destroy)
    return resolved


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writing args.json or split.json), then the others run it (reading
    what rank 0 wrote). An error on one rank ends the run: torchrun then stops the others."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


@dataclass(frozen=True)
class Shard:
    """This rank's rows of a global batch.

    ``rows`` are every K-th row from row r (so ranks get near-equal counts, and similar lengths where a batch
    is sorted by length, as M's are). A rank left without rows (a global batch smaller than K) gets row 0 as
    a stand-in with ``weight`` 0, so it still runs forward and backward and takes part in the all-reduce.
    """

    rows: slice
    weight: float
    """real rows / global rows: the fraction of a per-row mean loss this rank contributes (0: stand-in)"""

    @property
    def empty(self) -> bool:
        return self.weight == 0.0


def shard(n: int) -> Shard:
    """This rank's :class:`Shard` of a global batch of ``n`` rows (all of it in a single process)."""
    if n < 1:
        raise ValueError(f"cannot shard an empty batch (n = {n})")
    k, r = world_size(), rank()
    count = len(range(r, n, k))
    return Shard(slice(r, n, k), count / n) if count else Shard(slice(0, 1), 0.0)


def all_sum(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sums each value over the ranks (identity in a single process); every rank must pass the same keys."""
    if not is_distributed():
        return values
    keys = sorted(values)
    total = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return dict(zip(keys, total.tolist(), strict=True))


def sum_tensor(x: torch.Tensor) -> torch.Tensor:
    """``x`` summed over the ranks (a new tensor, detached; ``x`` itself in a single process)."""
    if not is_distributed():
        return x
    total = x.detach().clone()
    dist.all_reduce(total)
    return total


class _Call(nn.Module):
    """A module whose forward is ``fn(model, *args)``, so that DDP tracks any loss computed from ``model``."""

    def __init__(self, model: nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, *args: Any) -> Any:
        return self.fn(self.model, *args)


class Replicated:
    """``Replicated(model, fn)(*args)`` is ``fn(model, *args)``; under torchrun it runs through
    ``DistributedDataParallel`` so that the backward pass of its result all-reduces (averages) the gradients.

    The DDP wrapper is made at the first call, i.e. after every rank has built the model and restored the
    run's checkpoint. ``model`` itself stays the module to save, evaluate and restore.
    """

    def __init__(self, model: nn.Module, fn: Callable[..., Any]) -> None:
        self.model = model
        self.fn = fn
        self._ddp: nn.Module | None = None

    def __call__(self, *args: Any) -> Any:
        if not is_distributed():
            return self.fn(self.model, *args)
        if self._ddp is None:
            from torch.nn.parallel import DistributedDataParallel

            device = next(self.model.parameters()).device
            ids = [device] if device.type == "cuda" else None
            self._ddp = DistributedDataParallel(_Call(self.model, self.fn), device_ids=ids)
        return self._ddp(*args)
