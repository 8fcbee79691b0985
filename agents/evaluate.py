"""Score a saved controller over many seeded episodes; optionally record one episode as a GIF.

    python -m agents.evaluate --controller runs/cmaes/dreamgym_TakeCoverLatent-v0__0/mean \
        --env dreamgym/TakeCoverLatent-v0 --world-model runs/takecover/world_model --episodes 100

Episode k is played from seed ``--seed + k``. Prints ``mean ± std over N episodes`` and writes a JSON
(default ``<controller>/evaluation.json``) with every episode's return, length and seed. ``--gif PATH``
records episode 0 from ``env.render()`` (``render_mode="rgb_array"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dreamgym.checkpoint import save_json, versions
from dreamgym.cli_args import Count, parse_args
from dreamgym.controller import Controller
from dreamgym.tools.record import VIDEO_SUFFIXES, write_video

from .backends import EnvArgs, backend_name, make_evaluator, make_single_env, parse_env_kwargs
from .rollout import score_episode

# Episode seeds of the scores this project reports: real games from REAL_SEEDS + k, dreams from DREAM_SEEDS + k,
# both far from the seeds CMA-ES trains on (derived from (seed, generation)).
REAL_SEEDS = 1_000_000
DREAM_SEEDS = 2_000_000


@dataclass(frozen=True)
class EvalArgs(EnvArgs):
    """Episode k is played from ``--seed`` + k; ``--out``: the JSON report (default <controller>/evaluation.json)."""

    controller: str | None = None
    """folder with controller.safetensors + controller.json (required)"""
    episodes: Count = 100
    """number of episodes"""
    gif: str | None = None
    """write episode 0 here as a looping .gif (or an .mp4)"""
    gif_every: Count = 1
    """keep every n-th frame of the recording (it still plays in real time)"""
    gif_width: Count | None = None
    """resize the recording's frames to this width, keeping their aspect (default: as rendered)"""


def resize_to_width(frame: np.ndarray, width: int) -> np.ndarray:
    height = max(1, round(frame.shape[0] * width / frame.shape[1]))
    return np.asarray(Image.fromarray(frame[..., :3]).resize((width, height), Image.Resampling.BILINEAR))


def record_gif(path: str | Path, args: EvalArgs, controller: Controller, seed: int) -> tuple[float, int]:
    """Plays one episode from ``seed`` with rgb_array rendering and writes it as a looping GIF."""
    env = make_single_env(args, render_mode="rgb_array")
    frames: list[np.ndarray] = []
    try:
        result = score_episode(env, controller.config, controller.params, seed, frames.append)
        fps = env.metadata.get("render_fps") or 30
    finally:
        env.close()
    kept = frames[:: args.gif_every]
    if args.gif_width is not None:
        kept = [resize_to_width(frame, args.gif_width) for frame in kept]
    write_video(path, kept, fps / args.gif_every)
    return result


def evaluate(args: EvalArgs) -> dict[str, Any]:
    """Scores ``args.controller`` in ``args.env``; returns (and writes) the JSON report."""
    if args.controller is None:
        raise ValueError("--controller is required (a folder written by agents.cmaes, e.g. runs/cmaes/<run>/mean)")
    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    if args.gif_every < 1 or (args.gif_width is not None and args.gif_width < 1):
        raise ValueError(f"--gif-every and --gif-width must be >= 1, got {args.gif_every} and {args.gif_width}")
    if args.gif and Path(args.gif).suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"--gif {args.gif}: the recording must end in one of {VIDEO_SUFFIXES}")
    env = make_single_env(args)
    try:
        controller = Controller.load(args.controller, env)
    finally:
        env.close()
    evaluator = make_evaluator(args, controller.config, progress=f"evaluate {args.env}")
    try:
        scores = evaluator.evaluate(controller.params[None], args.episodes, args.seed)
    finally:
        evaluator.close()
    returns = scores.returns[0]
    report = {
        "controller": str(args.controller),
        "env": args.env,
        "env_kwargs": parse_env_kwargs(args),
        "backend": backend_name(args),
        "episodes": args.episodes,
        "mean": float(returns.mean()),
        "std": float(returns.std()),
        "returns": returns.tolist(),
        "lengths": scores.lengths[0].tolist(),
        "seeds": scores.seeds[0].tolist(),
        "versions": versions(),
    }
    if args.gif:
        gif_return, _ = record_gif(args.gif, args, controller, int(scores.seeds[0, 0]))
        report["gif"] = {"path": str(args.gif), "seed": int(scores.seeds[0, 0]), "return": gif_return}
    path = Path(args.out) if args.out else Path(args.controller) / "evaluation.json"
    save_json(path, report)
    return report | {"report": str(path)}


def main(argv: list[str] | None = None) -> None:
    report = evaluate(parse_args(EvalArgs, argv, __doc__))
    print(f"{report['env']}: {report['mean']:.1f} ± {report['std']:.1f} over {report['episodes']} episodes")
    print(f"per-episode returns and seeds: {report['report']}")


if __name__ == "__main__":
    main()
