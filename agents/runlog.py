"""What a CMA-ES run shows while it trains: fitness CSV, TensorBoard scalars and the fitness-curve PNG.

One row per generation, columns :data:`COLUMNS`; ``eval_mean``/``eval_std`` are NaN except on
generations where the ES mean was evaluated. Every file here is derived from the run's history, so it is
rewritten whole (atomically) rather than appended to, and a resumed run reproduces it exactly.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from dreamgym.data import atomic_write

COLUMNS = ("generation", "best", "mean", "worst", "sigma", "eval_mean", "eval_std", "steps", "seconds")
_SCALARS = {
    "best": "fitness/best",
    "mean": "fitness/mean",
    "worst": "fitness/worst",
    "sigma": "cmaes/sigma",
    "eval_mean": "eval/mean",
    "eval_std": "eval/std",
}


def write_csv(path: str | os.PathLike, history: np.ndarray) -> None:
    """history (G, len(COLUMNS)) -> CSV with a header; integers written as integers, NaN as empty."""

    def cell(name: str, value: float) -> str:
        if math.isnan(value):
            return ""
        return str(int(value)) if name in ("generation", "steps") else repr(float(value))

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(COLUMNS)
            out.writerows([cell(n, v) for n, v in zip(COLUMNS, row, strict=True)] for row in history)

    atomic_write(path, write)


def read_csv(path: str | os.PathLike) -> np.ndarray:
    """The history array a :func:`write_csv` file holds (empty cells -> NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return np.array([[float(r[c]) if r[c] else np.nan for c in COLUMNS] for r in rows], np.float64).reshape(
        -1, len(COLUMNS)
    )


def log_row(writer: SummaryWriter, row: Sequence[float]) -> None:
    """TensorBoard scalars of one history row, at step = generation."""
    values = dict(zip(COLUMNS, row, strict=True))
    for name, tag in _SCALARS.items():
        if not math.isnan(values[name]):
            writer.add_scalar(tag, values[name], int(values["generation"]))


def plot_fitness(path: str | os.PathLike, history: np.ndarray, title: str) -> None:
    """Best / mean / worst fitness per generation and the ES mean's evaluations, as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    col = {name: history[:, i] for i, name in enumerate(COLUMNS)}
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    gen = col["generation"]
    ax.fill_between(gen, col["worst"], col["best"], alpha=0.2, label="population best-worst")
    ax.plot(gen, col["mean"], label="population mean")
    ax.plot(gen, col["best"], lw=0.8, label="population best")
    evaluated = ~np.isnan(col["eval_mean"])
    if evaluated.any():
        ax.errorbar(
            gen[evaluated],
            col["eval_mean"][evaluated],
            yerr=col["eval_std"][evaluated],
            fmt="o",
            capsize=3,
            label="ES mean, evaluated",
        )
    ax.set(xlabel="generation", ylabel="return", title=title)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))
