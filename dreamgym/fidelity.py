"""How faithful a world model is to the real game: M's open-loop rollouts and calibration metrics.

The pieces ``python -m training.fidelity`` assembles into a report: M teacher-forced over a real episode
(the state it would carry in the latent env), M rolled forward open-loop on its own predictions, the
calibration of its done head and the rank statistics that compare dream scores with real ones. Numbers
that are undefined (fewer than two points, a constant series) are None.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from dreamgym.models.mdnrnn import MDNRNN, LSTMState, MDNOutput, sample_mixture

Feedback = Literal["mean", "sample"]


def pearson(x: Any, y: Any) -> float | None:
    """Pearson correlation of two equal-length series; None with fewer than 2 points or a constant series."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"pearson needs two 1-D series of one length, got shapes {x.shape} and {y.shape}")
    if len(x) < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    norm = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return None if norm == 0 else float(np.clip(dx @ dy / norm, -1.0, 1.0))


def ranks(x: Any) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    out = np.empty(len(x), np.float64)
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            out[order[start:end]] = (start + end + 1) / 2
            start = end
    return out


def spearman(x: Any, y: Any) -> float | None:
    """Spearman rank correlation (Pearson of the tie-averaged ranks)."""
    return pearson(ranks(x), ranks(y))


def slope(x: Any, y: Any) -> float | None:
    """Least-squares slope of y on x; None with fewer than 2 points or a constant x."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2:
        return None
    dx = x - x.mean()
    denom = float(dx @ dx)
    return None if denom == 0 else float(dx @ (y - y.mean()) / denom)


def brier(p: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error of probabilities ``p`` against 0/1 outcomes ``y``."""
    return float(np.mean((np.asarray(p, np.float64) - np.asarray(y, np.float64)) ** 2))


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Equal-width bins of [0, 1] by predicted probability: count, mean prediction, observed frequency.

    The last bin includes 1.0; empty bins have None for their means.
    """
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    index = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        rows.append({
            "low": b / bins,
            "high": (b + 1) / bins,
            "count": count,
            "mean_predicted": float(p[inside].mean()) if count else None,
            "observed": float(y[inside].mean()) if count else None,
        })  # fmt: skip
    return rows


def expected_length(p_done: np.ndarray) -> float:
    """sum_t prod_{s<t} (1 - p_s): the expected number of steps under per-step hazards ``p_done`` (T,),
    counted up to T (the steps the hazards cover)."""
    survive = np.cumprod(1.0 - np.asarray(p_done, np.float64))
    return float(1.0 + survive[:-1].sum()) if len(survive) else 0.0


def mixture_mean(out: MDNOutput) -> torch.Tensor:
    """The mean of M's per-dimension mixtures (..., Z): sum_k pi_k mu_k (untempered)."""
    return (out.log_pi.exp() * out.mu).sum(-1)


def restart_flags(length: int, device: torch.device | None = None) -> torch.Tensor:
    """(T,) restart flags of an episode from its first step: 1.0 at step 0, else 0."""
    flags = torch.zeros(length, device=device)
    flags[:1] = 1.0
    return flags


@torch.inference_mode()
def hidden_states(mdnrnn: MDNRNN, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """(T, H) the h M's heads read at each step of one real episode, teacher-forced from h = 0 at its first step
    (z (T, Z) real latents, actions (T, A) encoded); the step-t h predicts z_{t+1}, reward_t and done_t."""
    h, _ = mdnrnn.lstm(mdnrnn.inputs(z, actions, restart_flags(len(z), z.device))[None])
    return h[0]


def teacher_force(
    mdnrnn: MDNRNN, z: torch.Tensor, actions: torch.Tensor, starts: list[int]
) -> tuple[MDNOutput, LSTMState]:
    """M fed one real episode from h = 0 at its first step, as the latent env does.

    z (T, Z) real latents, actions (T, A) encoded, ``starts`` sorted distinct steps in [0, T). Returns the
    heads of every step (T, ...) (step t predicts z_{t+1} and done_t) and M's state (h, c), each (S, H),
    just before each start, i.e. after consuming steps 0..t0-1 (zeros at t0 = 0).
    """
    if sorted(set(starts)) != list(starts) or (starts and not 0 <= starts[0] <= starts[-1] < len(z)):
        raise ValueError(f"starts must be sorted distinct steps in [0, {len(z)}), got {starts}")
    x = mdnrnn.inputs(z, actions, restart_flags(len(z), z.device))[None]
    state = mdnrnn.initial_state(1, z.device)
    state = (state[0][None], state[1][None])  # (layers, B, H)
    hs, hidden, cells, done = [], [], [], 0
    for cut in [*starts, len(z)]:
        if cut > done:
            h, state = mdnrnn.lstm(x[:, done:cut], state)
            hs.append(h[0])
            done = cut
        hidden.append(state[0][0, 0])
        cells.append(state[1][0, 0])
    heads = mdnrnn.heads(torch.cat(hs))
    return heads, (torch.stack(hidden[:-1]), torch.stack(cells[:-1]))


@torch.inference_mode()
def open_loop(
    mdnrnn: MDNRNN,
    z0: torch.Tensor,
    state: LSTMState,
    actions: torch.Tensor,
    restart: torch.Tensor,
    feedback: Feedback,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """M rolled forward on its own predictions from real latents z0 (B, Z) and states (h, c) (B, H).

    Step k feeds the previous prediction (z0 first) with the recorded ``actions`` (B, L, A) and ``restart``
    flags (B, L); the next latent is the mixture mean (``feedback="mean"``) or a sample at ``temperature``
    drawn with ``generator`` (``"sample"``). Returns the predictions (B, L, Z): [:, k] predicts z_{t0+k+1}.
    """
    if feedback not in ("mean", "sample"):
        raise ValueError(f"feedback must be 'mean' or 'sample', got {feedback!r}")
    tau = torch.full((len(z0),), float(temperature), device=z0.device)
    z, preds = z0, []
    for k in range(actions.shape[1]):
        out, state = mdnrnn.step(z, actions[:, k], restart[:, k], state)
        if feedback == "mean":
            z = mixture_mean(out)
        else:
            uniform = torch.rand(z.shape, generator=generator, device=z.device)
            noise = torch.randn(z.shape, generator=generator, device=z.device)
            z = sample_mixture(out, tau, uniform, noise)
        preds.append(z)
    return torch.stack(preds, dim=1) if preds else z0.new_zeros(len(z0), 0, z0.shape[-1])
