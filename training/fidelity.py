"""How faithful is a world model to the real game? Measured on held-out real episodes.

    python -m training.fidelity --world-model takecover --episodes runs/heldout --out runs/fidelity \
        --controllers a=runs/a/mean,b=runs/b/mean --scores scores.json

V encodes every frame of the episode shards in ``--episodes`` (mu is the true latent); M is teacher-forced
over each episode from h = 0 at its first step with the real z and actions, as the latent env does. Writes
``<out>/fidelity.json`` and ``<out>/fidelity.png`` with:

- open-loop error vs horizon: from ``--starts`` random steps t0 of each episode, M runs on its own
  predictions (the untempered mixture mean and/or a sample at ``--temperature``, ``--feedback``) with the
  recorded actions; latent MSE against the real z and pixel MSE of V's decoding against the real frame
  (pixels in [0, 1]) at each of ``--horizons``, beside two scales: "copy last z" (z_t0 as the guess) and
  V's own reconstruction error of the target frames;
- the episode outcome the dream scores: for survival games the expected length under the teacher-forced
  done hazard, sum_t prod_{s<t} (1 - p_s) summed over the real steps, vs the real length; otherwise the
  reward head's per-episode sum vs the real return. Pearson correlation, plus that of a constant-rate
  baseline (the hazard of the data's base rate, or the mean reward per step) for scale: with the sum cut
  at the real length, even a constant hazard correlates with the length;
- done calibration: the calibrated P(done) of every step in 10 equal-width bins (count, mean prediction,
  observed frequency), its Brier score and that of always predicting the base rate;
- dream vs real: controllers scored in both (``--scores`` JSON: name -> {"dream": x, "real": x}, each x a
  number or the path of an ``agents.evaluate`` JSON, relative paths as given or from the scores file's
  folder) and the ``--controllers NAME=DIR`` scored here in the bundle's dream (``--dream-episodes`` episodes
  at ``--temperature`` from seeds ``--dream-seed + k``; their real score from ``--scores`` or
  ``DIR/evaluation_real.json``): n, Pearson, Spearman, least-squares slope of real on dream. The project's
  target is Spearman >= 0.9 over >= 8 controllers.

Deterministic given ``--seed`` (start steps, samples) and ``--dream-seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from dreamgym.checkpoint import CheckpointError, load_json, save_json, versions
from dreamgym.cli_args import parse_args
from dreamgym.controller import CONFIG_FILE as CONTROLLER_FILE
from dreamgym.controller import Controller
from dreamgym.data import atomic_write, list_episodes, load_episode
from dreamgym.envs import DreamVectorEnv
from dreamgym.episodes import rollout_population
from dreamgym.fidelity import (
    brier,
    expected_length,
    open_loop,
    pearson,
    reliability,
    restart_flags,
    slope,
    spearman,
    teacher_force,
)
from dreamgym.models.mdnrnn import check_temperature
from dreamgym.models.vae import ConvVAE, frames_to_tensor
from dreamgym.runs import set_threads
from dreamgym.world_model import WorldModel, resolve_bundle

from .common import resolve_device
from .encode import encode_episode

JSON_FILE = "fidelity.json"
PNG_FILE = "fidelity.png"
REAL_EVALUATION = "evaluation_real.json"
TARGET_SPEARMAN = 0.9
TARGET_CONTROLLERS = 8
BINS = 10
DECODE_BATCH = 256


@dataclass(frozen=True)
class FidelityArgs:
    world_model: str
    """world-model bundle folder or shipped name"""
    episodes: str
    """folder of held-out real episode shards (with frames)"""
    out: str
    """report folder (fidelity.json, fidelity.png)"""
    horizons: str = "1,10,50,200"
    """open-loop horizons, comma-separated positive integers"""
    starts: int = 5
    """open-loop start steps per episode"""
    feedback: Literal["both", "mean", "sample"] = "both"
    """what M's open-loop rollout feeds back: the mixture mean, a sample at --temperature, or both"""
    temperature: float | None = None
    """tau of open-loop samples and of the dream scoring --controllers (default: the game's dream tau)"""
    max_episodes: int | None = None
    """use only the first N shards"""
    scores: str | None = None
    """JSON name -> {"dream": number or evaluation JSON, "real": number or evaluation JSON}"""
    controllers: str | None = None
    """NAME=DIR,... controllers to score in the bundle's dream here"""
    dream_episodes: int = 100
    """dream episodes per controller of --controllers"""
    dream_seed: int = 2_000_000
    """dream episode k is played from seed dream_seed + k (the project's dream evaluation seeds)"""
    dropout: float | None = None
    """dropout rate of the dream scoring --controllers (default: the rate M was trained with)"""
    seed: int = 0
    """seed of the start steps and of the open-loop samples"""
    device: str = "cpu"
    """cpu, cuda, cuda:N or auto"""
    threads: int | None = None
    """torch CPU threads"""
    batch_size: int = 256
    """frames encoded per forward pass"""


@dataclass(frozen=True)
class Score:
    """One controller's mean score in the dream or the real game, and where it came from."""

    value: float
    source: str


@dataclass(frozen=True)
class Plan:
    """Checked arguments: everything read from disk before the work starts."""

    shards: list[Path]
    horizons: list[int]
    feedback: list[str]
    scores: dict[str, dict[str, Score]]
    controllers: dict[str, Path]


def parse_horizons(text: str) -> list[int]:
    """Parses "1,10,50" -> [1, 10, 50] (sorted, distinct, each >= 1)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--horizons must be comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"--horizons must be comma-separated positive integers, got {text!r}")
    return sorted(set(values))


def parse_controllers(text: str | None) -> dict[str, Path]:
    """Parses "a=DIR,b=DIR" -> {name: folder}; each folder must hold a saved controller."""
    controllers: dict[str, Path] = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        name, sep, folder = pair.partition("=")
        name, folder = name.strip(), folder.strip()
        if not sep or not name or not folder:
            raise ValueError(f"--controllers takes NAME=DIR pairs separated by commas, got {pair!r}")
        if name in controllers:
            raise ValueError(f"--controllers names {name!r} twice")
        if not (Path(folder) / CONTROLLER_FILE).is_file():
            raise FileNotFoundError(f"--controllers {name}={folder}: no {CONTROLLER_FILE} there")
        controllers[name] = Path(folder)
    return controllers


def evaluation_mean(path: Path) -> float:
    """The mean score of an ``agents.evaluate`` JSON (its "mean", else the mean of its "returns")."""
    try:
        report = load_json(path)
    except CheckpointError as err:
        raise ValueError(f"unreadable evaluation JSON: {err}") from None
    if isinstance(report.get("mean"), (int, float)):
        return float(report["mean"])
    if isinstance(report.get("returns"), list) and report["returns"]:
        return float(np.mean(report["returns"]))
    raise ValueError(f"{path}: not an evaluation JSON (no 'mean' or 'returns')")


def read_score(value: Any, base: Path, where: str) -> Score:
    """A number, or the path of an evaluation JSON (as given, else relative to ``base``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return Score(float(value), "given")
    if isinstance(value, str):
        path = Path(value) if Path(value).is_file() else base / value
        if not path.is_file():
            raise FileNotFoundError(f"{where}: no evaluation JSON at {value!r} (nor under {base})")
        return Score(evaluation_mean(path), str(path))
    raise ValueError(f"{where}: expected a finite number or the path of an evaluation JSON, got {value!r}")


def read_scores(path: str | None) -> dict[str, dict[str, Score]]:
    """The --scores file: name -> {"dream"?: Score, "real"?: Score}."""
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--scores {path}: no such file")
    try:
        data = load_json(file)
    except CheckpointError as err:
        raise ValueError(f"--scores: {err}") from None
    scores = {}
    for name, entry in data.items():
        if not isinstance(entry, dict) or not entry.keys() <= {"dream", "real"} or not entry:
            raise ValueError(f"--scores {path}: entry {name!r} must be an object with 'dream' and/or 'real'")
        scores[name] = {k: read_score(v, file.parent, f"--scores {path}: {name}.{k}") for k, v in entry.items()}
    return scores


def check_args(args: FidelityArgs, model: WorldModel) -> Plan:
    """Validates every argument and reads the score files, so a mistake fails before any work."""
    folder = Path(args.episodes)
    if not folder.is_dir():
        raise FileNotFoundError(f"--episodes {args.episodes}: no such folder")
    if args.max_episodes is not None and args.max_episodes < 1:
        raise ValueError(f"--max-episodes must be >= 1, got {args.max_episodes}")
    shards = list_episodes(folder)[: args.max_episodes]
    if not shards:
        raise ValueError(f"--episodes {args.episodes}: no episode shards (episode_NNNNNN.npz) there")
    game = load_episode(shards[0]).game
    if game != model.config.game:
        raise ValueError(f"--episodes are {game!r} episodes, the world model is for {model.config.game!r}")
    if args.starts < 1 or args.dream_episodes < 1 or args.batch_size < 1:
        raise ValueError(f"--starts, --dream-episodes and --batch-size must be >= 1, "
                         f"got {args.starts}, {args.dream_episodes} and {args.batch_size}")  # fmt: skip
    if args.temperature is not None:
        check_temperature(args.temperature)
    scores = read_scores(args.scores)
    controllers = parse_controllers(args.controllers)
    for name, folder in controllers.items():
        if "real" not in scores.get(name, {}) and not (folder / REAL_EVALUATION).is_file():
            raise FileNotFoundError(f"--controllers {name}: no real score (give it in --scores or as "
                                    f"{folder / REAL_EVALUATION})")  # fmt: skip
    feedback = ["mean", "sample"] if args.feedback == "both" else [args.feedback]
    return Plan(shards, parse_horizons(args.horizons), feedback, scores, controllers)


@dataclass
class Gathered:
    """What the episodes give: per-episode outcomes, per-step done predictions, and the open-loop starts."""

    lengths: list[int]
    returns: list[float]
    predicted_reward: list[float]
    p_done: list[np.ndarray]
    terminated: list[np.ndarray]
    z0: list[torch.Tensor]  # (Z,) real latent at each start
    h: list[torch.Tensor]
    c: list[torch.Tensor]
    actions: list[torch.Tensor]  # (L, A) recorded actions from each start, zero-padded
    restart: list[torch.Tensor]  # (L,)
    targets: list[torch.Tensor]  # (len(horizons), Z) real z at t0 + h (zeros where past the end)
    valid: list[np.ndarray]  # (len(horizons),) whether t0 + h is a step of the episode
    frames: dict[int, list[np.ndarray]]  # horizon -> real frames at t0 + h of the valid starts


@torch.inference_mode()
def gather(model: WorldModel, plan: Plan, args: FidelityArgs, device: torch.device) -> Gathered:
    """Encodes every episode, teacher-forces M over it and cuts its open-loop windows."""
    rng = np.random.default_rng(args.seed)
    steps = max(plan.horizons)
    g = Gathered([], [], [], [], [], [], [], [], [], [], [], [], {h: [] for h in plan.horizons})
    for path in tqdm(plan.shards, desc="fidelity: encode"):
        episode, mu, actions = encode_episode(model, path, device, args.batch_size)
        T = len(episode)
        count = min(args.starts, T - 1)
        starts = sorted(rng.choice(T - 1, size=count, replace=False).tolist()) if count > 0 else []
        heads, (h, c) = teacher_force(model.mdnrnn, mu, actions, starts)
        g.lengths.append(T)
        g.returns.append(float(episode.rewards.astype(np.float64).sum()))
        g.predicted_reward.append(float(heads.reward.sum()))
        g.p_done.append(model.mdnrnn.done_probability(heads.done_logit).cpu().numpy().astype(np.float64))
        g.terminated.append(episode.terminated.astype(np.float64))
        padded = torch.cat([actions, actions.new_zeros(steps, actions.shape[1])])
        restart = torch.cat([restart_flags(T, device), torch.zeros(steps, device=device)])
        for i, t0 in enumerate(starts):
            g.z0.append(mu[t0])
            g.h.append(h[i])
            g.c.append(c[i])
            g.actions.append(padded[t0 : t0 + steps])
            g.restart.append(restart[t0 : t0 + steps])
            valid = np.array([t0 + k < T for k in plan.horizons])
            g.valid.append(valid)
            g.targets.append(torch.stack([mu[min(t0 + k, T - 1)] for k in plan.horizons]))
            for k, ok in zip(plan.horizons, valid, strict=True):
                if ok:
                    g.frames[k].append(episode.frames[t0 + k])
    return g


@torch.inference_mode()
def frame_mse(vae: ConvVAE, z: torch.Tensor, frames: np.ndarray) -> float | None:
    """Mean squared pixel error (pixels in [0, 1]) of V's decoding of z (N, Z) against real frames (N, 64, 64, 3)."""
    if len(z) == 0:
        return None
    total = 0.0
    for i in range(0, len(z), DECODE_BATCH):
        decoded = vae.decode(z[i : i + DECODE_BATCH])
        real = frames_to_tensor(frames[i : i + DECODE_BATCH], z.device)
        total += float((decoded - real).pow(2).mean(dim=(1, 2, 3)).sum())
    return total / len(z)


def mean_or_none(values: torch.Tensor) -> float | None:
    return float(values.mean()) if len(values) else None


@torch.inference_mode()
def open_loop_report(model: WorldModel, g: Gathered, plan: Plan, tau: float, seed: int) -> dict[str, Any]:
    """Latent and decoded-frame MSE at each horizon, for each feedback and the two baselines."""
    horizons = plan.horizons
    n = len(g.z0)
    report: dict[str, Any] = {
        "horizons": horizons,
        "feedback": plan.feedback,
        "temperature": tau if "sample" in plan.feedback else None,
        "note": "mean: M's untempered mixture mean fed back; sample: a draw at the temperature; copy_last_z: "
        "z_t0 as the guess of z_t0+h; v_reconstruction: V's own error on the target frames",
        "n": [int(sum(v[j] for v in g.valid)) for j in range(len(horizons))],
        "latent_mse": {},
        "frame_mse": {},
    }
    if n == 0:
        for key in ("latent_mse", "frame_mse"):
            report[key] = {name: [None] * len(horizons) for name in [*plan.feedback, "copy_last_z"]}
        report["frame_mse"]["v_reconstruction"] = [None] * len(horizons)
        return report
    z0, targets = torch.stack(g.z0), torch.stack(g.targets)  # (B, Z), (B, H, Z)
    valid = torch.from_numpy(np.stack(g.valid)).to(z0.device)  # (B, H)
    frames = {k: np.stack(f) if f else np.empty((0, 64, 64, 3), np.uint8) for k, f in g.frames.items()}
    guesses = {"copy_last_z": z0[:, None].expand_as(targets)}
    actions, restart, state = torch.stack(g.actions), torch.stack(g.restart), (torch.stack(g.h), torch.stack(g.c))
    for feedback in tqdm(plan.feedback, desc="fidelity: open-loop rollouts"):
        generator = torch.Generator(z0.device).manual_seed(seed)
        preds = open_loop(model.mdnrnn, z0, state, actions, restart, feedback, tau, generator)  # type: ignore[arg-type]
        guesses[feedback] = preds[:, [k - 1 for k in horizons]]
    for name in [*plan.feedback, "copy_last_z"]:
        guess = guesses[name]
        report["latent_mse"][name] = [
            mean_or_none((guess[:, j] - targets[:, j]).pow(2).mean(-1)[valid[:, j]]) for j in range(len(horizons))
        ]
        report["frame_mse"][name] = [frame_mse(model.vae, guess[valid[:, j], j], frames[k])
                                     for j, k in enumerate(horizons)]  # fmt: skip
    report["frame_mse"]["v_reconstruction"] = [frame_mse(model.vae, targets[valid[:, j], j], frames[k])
                                               for j, k in enumerate(horizons)]  # fmt: skip
    return report


def outcome_report(model: WorldModel, g: Gathered) -> dict[str, Any]:
    """Predicted vs true episode length (survival games, done head) or return (reward head)."""
    if model.game.reward_mode == "survival":
        base = float(np.concatenate(g.terminated).mean())
        predicted = [expected_length(p) for p in g.p_done]
        baseline = [expected_length(np.full(T, base)) for T in g.lengths]
        true: list[float] = [float(T) for T in g.lengths]
        kind, head = "length", "done"
        formula = "sum_t prod_{s<t} (1 - p_s) over the real steps, p the teacher-forced calibrated P(done)"
        baseline_name = f"constant hazard at the base rate {base:.4g}"
    else:
        mean_reward = float(np.sum(g.returns) / max(1, sum(g.lengths)))
        predicted, true = g.predicted_reward, g.returns
        baseline = [mean_reward * T for T in g.lengths]
        kind, head = "return", "reward"
        formula = "sum over the real steps of the teacher-forced reward head"
        baseline_name = f"mean reward per step {mean_reward:.4g} x length"
    return {
        "kind": kind,
        "head": head,
        "formula": formula,
        "n": len(true),
        "pearson": pearson(predicted, true),
        "spearman": spearman(predicted, true),
        "baseline": {"name": baseline_name, "pearson": pearson(baseline, true)},
        "points": [{"predicted": p, "true": t} for p, t in zip(predicted, true, strict=True)],
    }


def done_report(g: Gathered) -> dict[str, Any]:
    """Reliability bins and Brier score of the teacher-forced calibrated P(done) of every step."""
    p, y = np.concatenate(g.p_done), np.concatenate(g.terminated)
    base = float(y.mean())
    return {
        "probability": "sigmoid(logit - log w), the calibrated P(done) the dream samples",
        "steps": len(p),
        "bins": reliability(p, y, BINS),
        "brier": brier(p, y),
        "base_rate": base,
        "base_rate_brier": brier(np.full(len(y), base), y),
    }


def obs_mode_for(controller: Controller, model: WorldModel) -> str:
    """The dream observation mode whose size the controller takes (z, zh or zch)."""
    z, h = model.config.mdnrnn.z_size, model.config.mdnrnn.hidden_size
    modes = {z: "z", z + h: "zh", z + 2 * h: "zch"}
    if controller.config.obs_dim not in modes:
        raise ValueError(f"a controller takes observations of size {controller.config.obs_dim}; this world model's are "
                         f"{z} (z), {z + h} (zh) or {z + 2 * h} (zch)")  # fmt: skip
    return modes[controller.config.obs_dim]


@torch.inference_mode()
def score_in_dream(model: WorldModel, folder: Path, episodes: int, tau: float, seed: int,
                   dropout: float | None = None) -> Score:  # fmt: skip
    """Mean return of the controller in ``folder`` over ``episodes`` dreams (episode k from seed + k)."""
    controller = Controller.load(folder)
    envs = DreamVectorEnv(episodes, model, temperature=tau, obs_mode=obs_mode_for(controller, model),  # type: ignore[arg-type]
                          device=model.device, dropout=dropout, return_tensors=True)  # fmt: skip
    controller.config.check_env(envs, f"controller {folder}")
    params = torch.from_numpy(controller.params)[None].to(model.device)
    with torch.no_grad():
        scores = rollout_population(envs, controller.config, params, episodes, seed)
    dropped = envs.core.dropout
    envs.close()
    source = f"scored here: {episodes} dreams at tau {tau}, dropout {dropped:g}, from seed {seed}"
    return Score(float(scores.returns.mean()), source)


def scatter_report(model: WorldModel, plan: Plan, args: FidelityArgs, tau: float) -> dict[str, Any]:
    """Dream vs real scores of every controller that has both."""
    scores = {name: dict(entry) for name, entry in plan.scores.items()}
    for name, folder in tqdm(plan.controllers.items(), desc="fidelity: dream scores", disable=not plan.controllers):
        entry = scores.setdefault(name, {})
        entry["dream"] = score_in_dream(model, folder, args.dream_episodes, tau, args.dream_seed, args.dropout)
        if "real" not in entry:  # --scores names it, else the controller's own evaluation
            entry["real"] = Score(evaluation_mean(folder / REAL_EVALUATION), str(folder / REAL_EVALUATION))
    points = [{"name": name, "dream": e["dream"].value, "real": e["real"].value,
               "dream_source": e["dream"].source, "real_source": e["real"].source}
              for name, e in sorted(scores.items()) if e.keys() == {"dream", "real"}]  # fmt: skip
    dream, real = [p["dream"] for p in points], [p["real"] for p in points]
    rho = spearman(dream, real)
    return {
        "n": len(points),
        "pearson": pearson(dream, real),
        "spearman": rho,
        "slope": slope(dream, real),
        "slope_note": "least-squares slope of real on dream",
        "target": {"spearman": TARGET_SPEARMAN, "controllers": TARGET_CONTROLLERS,
                   "met": rho is not None and rho >= TARGET_SPEARMAN and len(points) >= TARGET_CONTROLLERS},
        "skipped": sorted(name for name, e in scores.items() if e.keys() != {"dream", "real"}),
        "points": points,
    }  # fmt: skip


def target_line(scatter: dict[str, Any]) -> str:
    """The one line the project tracks: dream-vs-real Spearman against its target."""
    rho = "undefined" if scatter["spearman"] is None else f"{scatter['spearman']:.3f}"
    verdict = "MET" if scatter["target"]["met"] else "NOT MET"
    return (f"dream-vs-real Spearman = {rho} over {scatter['n']} controllers "
            f"(target >= {TARGET_SPEARMAN} over >= {TARGET_CONTROLLERS}): {verdict}")  # fmt: skip


def plot(path: Path, report: dict[str, Any]) -> None:
    """The 4 panels: open-loop error, predicted vs true outcome, reliability diagram, dream vs real."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    fig = Figure(figsize=(12, 9))
    (ax_loop, ax_out), (ax_rel, ax_dvr) = fig.subplots(2, 2)
    loop = report["open_loop"]
    twin = ax_loop.twinx()
    names = [*loop["feedback"], "copy_last_z", "v_reconstruction"]  # one colour per name in both series
    for i, name in enumerate(names):
        for axis, key, style in ((ax_loop, "latent_mse", "o-"), (twin, "frame_mse", "s--")):
            if name in loop[key]:
                ys = [np.nan if v is None else v for v in loop[key][name]]
                axis.plot(loop["horizons"], ys, style, color=f"C{i}", label=f"{key.split('_')[0]}: {name}")
    ax_loop.set(xscale="log", yscale="log", xlabel="horizon (steps)", ylabel="latent MSE (solid)",
                title="open-loop error")  # fmt: skip
    twin.set(yscale="log", ylabel="decoded-frame MSE, pixels in [0, 1] (dashed)")
    handles = [*ax_loop.get_legend_handles_labels()[0], *twin.get_legend_handles_labels()[0]]
    ax_loop.legend(handles=handles, fontsize="xx-small", loc="lower right", ncol=2)

    out = report["episode_outcome"]
    xs, ys = [p["true"] for p in out["points"]], [p["predicted"] for p in out["points"]]
    ax_out.scatter(xs, ys, s=10, alpha=0.6)
    if xs:
        lo, hi = min(xs + ys), max(xs + ys)
        ax_out.plot([lo, hi], [lo, hi], "k:", lw=1)
    r = "undefined" if out["pearson"] is None else f"{out['pearson']:.3f}"
    ax_out.set(xlabel=f"true {out['kind']}", ylabel=f"predicted {out['kind']} ({out['head']} head)",
               title=f"episode {out['kind']}: Pearson {r}")  # fmt: skip

    done = report["done_calibration"]
    ax_rel.plot([0, 1], [0, 1], "k:", lw=1)
    rows = [b for b in done["bins"] if b["count"]]
    if rows:
        sizes = [20 + 200 * b["count"] / done["steps"] for b in rows]
        ax_rel.scatter([b["mean_predicted"] for b in rows], [b["observed"] for b in rows], s=sizes)
        for b in rows:
            ax_rel.annotate(str(b["count"]), (b["mean_predicted"], b["observed"]), fontsize="x-small")
    title = f"done calibration: Brier {done['brier']:.4g} (base rate {done['base_rate_brier']:.4g})"
    ax_rel.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted P(done)", ylabel="observed frequency", title=title)

    scatter = report["dream_vs_real"]
    if scatter["points"]:
        for p in scatter["points"]:
            ax_dvr.scatter(p["dream"], p["real"], color="C0")
            ax_dvr.annotate(p["name"], (p["dream"], p["real"]), fontsize="x-small")
    else:
        ax_dvr.text(0.5, 0.5, "no controller scored in both", ha="center", va="center", transform=ax_dvr.transAxes)
    rho = "undefined" if scatter["spearman"] is None else f"{scatter['spearman']:.3f}"
    ax_dvr.set(xlabel="dream score", ylabel="real score", title=f"dream vs real: Spearman {rho}, n = {scatter['n']}")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))


def fidelity(args: FidelityArgs) -> dict[str, Any]:
    """Measures the bundle on the episodes; writes and returns the report."""
    set_threads(args.threads)
    if Path(args.out).is_file():
        raise FileExistsError(f"--out {args.out} is a file, not a folder")
    device = resolve_device(args.device)
    model = WorldModel.load(resolve_bundle(args.world_model), device)
    plan = check_args(args, model)
    tau = model.game.dream_temperature if args.temperature is None else args.temperature
    g = gather(model, plan, args, device)
    report = {
        "world_model": str(args.world_model),
        "game": model.config.game,
        "episodes": {
            "folder": str(args.episodes),
            "count": len(plan.shards),
            "steps": int(sum(g.lengths)),
            "starts_per_episode": args.starts,
        },
        "seed": args.seed,
        "open_loop": open_loop_report(model, g, plan, tau, args.seed),
        "episode_outcome": outcome_report(model, g),
        "done_calibration": done_report(g),
        "dream_vs_real": scatter_report(model, plan, args, tau),
        "versions": versions(),
    }
    out = Path(args.out)
    save_json(out / JSON_FILE, report)
    plot(out / PNG_FILE, report)
    return report


def main(argv: list[str] | None = None) -> None:
    args = parse_args(FidelityArgs, argv, __doc__)
    report = fidelity(args)
    loop = report["open_loop"]
    for name, values in loop["latent_mse"].items():
        cells = ", ".join(
            f"h{k} {'-' if v is None else f'{v:.4g}'}" for k, v in zip(loop["horizons"], values, strict=True)
        )
        print(f"open-loop latent MSE ({name}): {cells}")
    out, done = report["episode_outcome"], report["done_calibration"]
    print(f"episode {out['kind']} from the {out['head']} head: Pearson {out['pearson']} "
          f"(baseline {out['baseline']['pearson']})")  # fmt: skip
    print(f"done calibration: Brier {done['brier']:.4g} vs {done['base_rate_brier']:.4g} at the base rate")
    print(target_line(report["dream_vs_real"]))
    print(f"fidelity: wrote {Path(args.out) / JSON_FILE} and {Path(args.out) / PNG_FILE}")


if __name__ == "__main__":
    main()
