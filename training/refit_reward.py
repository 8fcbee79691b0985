"""Refit M's reward head on real episodes, everything else of the world model frozen.

    python -m training.refit_reward --world-model carracing --episodes runs/a,runs/b --out runs/cr/world_model

Why: a reward head trained on episodes where looking like the road goes with driving along it learns to pay
for the look. The shipped CarRacing head, teacher-forced on noisy-expert episodes that wobble on the road
without getting anywhere (real returns 65-143), summed to 417-758, and CMA-ES in that dream learned to stay on
the road without driving. M's LSTM state h does carry the progress: a linear head refit on episodes that
include such driving predicts the returns of held-out ones to within tens of points (docs/fidelity.md).

How: V encodes every frame (z = its mean), M is teacher-forced over each episode from h = 0 at its first step
(as the latent env runs it), and reward_t is regressed on h_t by ridge regression (``--ridge`` on the weights,
the bias free), solved exactly in float64. The output is a new bundle: V, M's LSTM, mixture and done heads
unchanged, the reward head replaced, saved in the source's weight dtype; its provenance names the source,
the episodes and the fit. ``refit_reward.json`` beside it lists each episode's real return and the summed
predictions of the old and the new head (every ``--holdout``-th episode is left out of the fit and reported
apart, so the report shows what the head does on episodes it did not see).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from dreamgym.checkpoint import save_json, versions
from dreamgym.cli_args import Count, NonNegativeFloat, parse_args
from dreamgym.data import list_episodes
from dreamgym.fidelity import hidden_states, pearson
from dreamgym.runs import Compute, set_threads
from dreamgym.world_model import WorldModel

from .common import resolve_device
from .encode import encode_episode

REPORT_FILE = "refit_reward.json"


@dataclass(frozen=True)
class RefitRewardArgs(Compute):
    world_model: str = "carracing"
    """world-model bundle folder or shipped name whose reward head is refit"""
    episodes: str = ""
    """comma-separated folders of real episode shards (with frames) to fit on"""
    out: str = "runs/carracing/world_model_reward"
    """folder of the new bundle"""
    ridge: NonNegativeFloat = 100.0
    """L2 penalty on the head's weights (the sum over steps of squared errors is what it is weighed against)"""
    holdout: Count = 5
    """every N-th episode (by folder order) is left out of the fit and reported apart"""
    batch_size: Count = 256
    """frames per V forward pass"""


@dataclass(frozen=True)
class EpisodeFeatures:
    name: str
    h: np.ndarray  # (T, H) float64
    rewards: np.ndarray  # (T,) float64
    old_sum: float


@torch.inference_mode()
def episode_features(model: WorldModel, path: Path, device: torch.device, batch_size: int) -> EpisodeFeatures:
    """h of every step of one episode shard, its rewards and the current head's summed prediction."""
    episode, mu, actions = encode_episode(model, path, device, batch_size)
    h = hidden_states(model.mdnrnn, mu, actions)
    old = float(model.mdnrnn.heads(h).reward.sum())
    return EpisodeFeatures(str(path), h.double().cpu().numpy(), episode.rewards.astype(np.float64), old)


def fit_ridge(episodes: list[EpisodeFeatures], ridge: float) -> tuple[np.ndarray, float]:
    """(weight (H,), bias) minimising sum (h.w + b - r)^2 + ridge |w|^2 over every step of ``episodes``."""
    size = episodes[0].h.shape[1] + 1
    gram, moment = np.zeros((size, size)), np.zeros(size)
    for e in episodes:
        x = np.hstack([e.h, np.ones((len(e.h), 1))])
        gram += x.T @ x
        moment += x.T @ e.rewards
    penalty = np.full(size, ridge)
    penalty[-1] = 0.0  # the bias is not shrunk
    solution = np.linalg.solve(gram + np.diag(penalty), moment)
    return solution[:-1], float(solution[-1])


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pearson and mean absolute error of the old and new heads' episode sums against the real returns."""
    real = [r["real"] for r in rows]
    out: dict[str, Any] = {"episodes": len(rows)}
    for head in ("old", "new"):
        predicted = [r[head] for r in rows]
        error = float(np.mean(np.abs(np.subtract(predicted, real)))) if rows else None
        out[head] = {"pearson": pearson(predicted, real), "mean_abs_error": error}
    return out


def refit_reward(args: RefitRewardArgs) -> dict[str, Any]:
    """Fits the head, writes the new bundle and its report; returns the report."""
    set_threads(args.threads)
    device = resolve_device(args.device)
    model = WorldModel.load(args.world_model, device)
    if model.mdnrnn.reward is None:
        raise ValueError(f"{args.world_model}: its M has no reward head to refit")
    folders = [f for f in args.episodes.split(",") if f]
    paths = [p for folder in folders for p in list_episodes(folder)]
    if not paths:
        raise ValueError(f"--episodes {args.episodes!r}: no episode shards found")
    features = [episode_features(model, p, device, args.batch_size) for p in tqdm(paths, desc="refit_reward: encode")]
    held = [i % args.holdout == args.holdout - 1 for i in range(len(features))]
    train = [f for f, out in zip(features, held, strict=True) if not out]
    if not train:
        raise ValueError(f"--holdout {args.holdout} leaves no episode to fit on")
    weight, bias = fit_ridge(train, args.ridge)
    dtype = model.weights_dtype
    weight = torch.from_numpy(weight).to(dtype).double().numpy()  # as saved, so the report is the bundle's head
    bias = float(torch.tensor(bias).to(dtype))
    rows = [{"episode": f.name, "held_out": out, "real": float(f.rewards.sum()), "old": f.old_sum,
             "new": float((f.h @ weight + bias).sum())} for f, out in zip(features, held, strict=True)]  # fmt: skip
    with torch.no_grad():
        head = model.mdnrnn.reward
        head.weight.copy_(torch.from_numpy(weight).to(head.weight)[None])
        head.bias.fill_(bias)
    model.provenance = {**model.provenance, "reward_head": {
        "refit_from": args.world_model, "episodes": folders, "fit_episodes": len(train),
        "fit_steps": int(sum(len(f.rewards) for f in train)), "ridge": args.ridge}}  # fmt: skip
    out = Path(args.out)
    model.save(out, dtype=dtype)
    report = {"world_model": args.world_model, "out": str(out), "ridge": args.ridge,
              "fit": summary([r for r in rows if not r["held_out"]]),
              "held_out": summary([r for r in rows if r["held_out"]]),
              "episodes": rows, "versions": versions()}  # fmt: skip
    save_json(out / REPORT_FILE, report)
    for part in ("fit", "held_out"):
        s = report[part]
        print(f"{part}: {s['episodes']} episodes; episode-sum error old {s['old']['mean_abs_error']}, "
              f"new {s['new']['mean_abs_error']}")
    return report


def main(argv: list[str] | None = None) -> None:
    refit_reward(parse_args(RefitRewardArgs, argv, __doc__))


if __name__ == "__main__":
    main()
