"""The paper's temperature experiment: controllers trained only in the dream at several tau, each scored in the
dream and in the real game, next to the paper's numbers.

    python -m recipes.temperature_sweep --world-model takecover --taus 0.1,0.5,1.0,1.15,1.3 \
        --generations 60 --popsize 32 --episodes 8 --out runs/takecover/sweep

For every tau: CMA-ES in ``dreamgym/<Game>Dream-v0`` at that tau (``<out>/tau<tau>/``, resumable), then
the ES mean scored over ``--dream-episodes`` dreams at the same tau and ``--real-episodes`` real games
through ``dreamgym/<Game>Latent-v0``. Writes ``sweep.json``, ``sweep.md`` (the table, with the paper's
columns for TakeCover) and ``sweep.png`` (scores against tau; episode-length histograms, dream vs real,
of each controller: the cheapest dream-fidelity check). The taus are trained in the order given (put the
one you care about first); the table and plot are sorted by tau. Every finished step is skipped on a rerun.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamgym.checkpoint import save_json
from dreamgym.cli_args import Count, parse_args
from dreamgym.data import atomic_write
from dreamgym.envs.registration import dream_id, latent_id
from dreamgym.runs import RunArgs, hand_down
from dreamgym.world_model import WorldModel

from .stages import cmaes, evaluate

# Ha & Schmidhuber (2018), TakeCover controllers trained in the dream, 100 episodes each: tau -> (dream, real)
PAPER_TAKECOVER: dict[float, tuple[tuple[float, float], tuple[float, float]]] = {
    0.10: ((2086, 140), (193, 58)),
    0.50: ((2060, 277), (196, 50)),
    1.00: ((1145, 690), (868, 511)),
    1.15: ((918, 546), (1092, 556)),
    1.30: ((732, 269), (753, 139)),
}


@dataclass(frozen=True)
class SweepArgs(RunArgs):
    """``--seed`` seeds CMA-ES; dream scores use seeds from 2,000,000, real ones from 1,000,000 (never trained on).
    ``--workers``: real-game worker processes."""

    out: str = "runs/takecover/sweep"
    world_model: str = "takecover"
    """bundle folder or shipped name"""
    taus: str = "0.1,0.5,1.0,1.15,1.3"
    """comma-separated dream temperatures"""
    obs_mode: str = "zch"
    """controller input: zch (the paper's TakeCover [z, c, h]), zh or z"""
    generations: Count = 60
    popsize: Count = 32
    episodes: Count = 8
    """dream episodes per CMA-ES candidate"""
    dream_episodes: Count = 100
    real_episodes: Count = 100


def parse_taus(text: str) -> list[float]:
    try:
        taus = [float(t) for t in text.split(",") if t.strip()]
    except ValueError as err:
        raise ValueError(f"--taus must be comma-separated numbers, got {text!r}") from err
    if not taus or any(not np.isfinite(t) or t <= 0 for t in taus):
        raise ValueError(f"--taus must be finite temperatures > 0, got {text!r}")
    return taus


def tau_dir(out: Path, tau: float) -> Path:
    return out / f"tau{tau:g}"


def scored(path: Path, make: Any) -> dict[str, Any]:
    """The report at ``path``, computed by ``make()`` only when it is not there yet."""
    if path.is_file():
        return json.loads(path.read_text())
    return make()


def train_args(args: SweepArgs, game: str, tau: float, out: Path) -> cmaes.TrainArgs:
    """The CMA-ES run of one tau, written to ``out`` (the pipeline trains its controller with these too)."""
    run = cmaes.TrainArgs(env=dream_id(game), world_model=args.world_model, obs_mode=args.obs_mode,
                          temperature=tau, generations=args.generations, popsize=args.popsize,
                          episodes=args.episodes, eval_every=0)  # fmt: skip
    return hand_down(run, args, out=str(out))


def run_tau(args: SweepArgs, game: str, tau: float) -> dict[str, Any]:
    """Trains (or resumes) the controller of one tau and scores it in the dream and the real game."""
    folder = tau_dir(Path(args.out), tau)
    cmaes.train(train_args(args, game, tau, folder))
    controller = str(folder / "mean")
    scoring = hand_down(evaluate.EvalArgs(world_model=args.world_model, obs_mode=args.obs_mode, controller=controller),
                        args)  # fmt: skip
    dream_path, real_path = folder / "mean" / "evaluation_dream.json", folder / "mean" / "evaluation_real.json"
    in_dream = dataclasses.replace(scoring, env=dream_id(game), temperature=tau, episodes=args.dream_episodes,
                                   seed=evaluate.DREAM_SEEDS, out=str(dream_path))  # fmt: skip
    in_game = dataclasses.replace(scoring, env=latent_id(game), episodes=args.real_episodes, seed=evaluate.REAL_SEEDS,
                                  out=str(real_path))  # fmt: skip
    dream = scored(dream_path, lambda: evaluate.evaluate(in_dream))
    real = scored(real_path, lambda: evaluate.evaluate(in_game))
    return {"tau": tau, "dream": summary(dream), "real": summary(real), "controller": controller,
            "dream_lengths": dream["lengths"], "real_lengths": real["lengths"]}  # fmt: skip


def summary(report: dict[str, Any]) -> dict[str, Any]:
    return {"mean": report["mean"], "std": report["std"], "episodes": report["episodes"],
            "first_seed": report["seeds"][0]}  # fmt: skip


def paper_cells(game: str, tau: float) -> tuple[str, str]:
    paper = PAPER_TAKECOVER.get(round(tau, 2)) if game == "takecover" else None
    if paper is None:
        return "–", "–"
    return f"{paper[0][0]:.0f} ± {paper[0][1]:.0f}", f"{paper[1][0]:.0f} ± {paper[1][1]:.0f}"


def markdown(rows: list[dict[str, Any]], game: str, args: SweepArgs) -> str:
    lines = [
        f"Controllers trained only in the {game} dream (CMA-ES {args.generations} generations x {args.popsize} "
        f"candidates x {args.episodes} dreams, seed {args.seed}), the ES mean scored over "
        f"{args.dream_episodes} dreams and {args.real_episodes} real episodes (mean ± std).",
        "",
        "| τ | dream (ours) | real (ours) | dream (paper) | real (paper) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        paper_dream, paper_real = paper_cells(game, r["tau"])
        lines.append(f"| {r['tau']:.2f} | {r['dream']['mean']:.0f} ± {r['dream']['std']:.0f} | "
                     f"{r['real']['mean']:.0f} ± {r['real']['std']:.0f} | {paper_dream} | {paper_real} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(path: Path, rows: list[dict[str, Any]], game: str) -> None:
    """Left: dream and real score against tau (ours and the paper's). Right: length histograms per tau."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5))
    ax, hist = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    taus = [r["tau"] for r in rows]
    for key, color in (("dream", "tab:purple"), ("real", "tab:green")):
        ax.errorbar(taus, [r[key]["mean"] for r in rows], [r[key]["std"] for r in rows], marker="o", capsize=3,
                    color=color, label=f"{key} (ours)")  # fmt: skip
        if game == "takecover":
            paper = sorted(PAPER_TAKECOVER.items())
            idx = 0 if key == "dream" else 1
            ax.plot([t for t, _ in paper], [v[idx][0] for _, v in paper], "--", marker="x", color=color,
                    alpha=0.6, label=f"{key} (paper)")  # fmt: skip
    ax.set(xlabel="temperature τ", ylabel="return (frames survived)", title=f"{game}: trained in the dream")
    ax.legend()
    bins = np.linspace(0, max(max(r["dream_lengths"] + r["real_lengths"]) for r in rows), 30)
    for i, r in enumerate(rows):
        color = f"C{i}"
        hist.hist(r["real_lengths"], bins, histtype="step", color=color, label=f"τ={r['tau']:g} real")
        hist.hist(r["dream_lengths"], bins, histtype="step", linestyle="--", color=color, label=f"τ={r['tau']:g} dream")
    hist.set(xlabel="episode length", ylabel="episodes", title="same controller: dream (dashed) vs real")
    hist.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def sweep(args: SweepArgs) -> list[dict[str, Any]]:
    taus = parse_taus(args.taus)
    game = WorldModel.load(args.world_model).config.game
    out = Path(args.out)
    rows = sorted((run_tau(args, game, tau) for tau in taus), key=lambda row: row["tau"])
    save_json(out / "sweep.json", {"args": dataclasses.asdict(args), "game": game, "rows": rows})
    atomic_write(out / "sweep.md", lambda tmp: Path(tmp).write_text(markdown(rows, game, args)))
    plot(out / "sweep.png", rows, game)
    print(markdown(rows, game, args))
    return rows


def main(argv: list[str] | None = None) -> None:
    sweep(parse_args(SweepArgs, argv, __doc__))


if __name__ == "__main__":
    main()
