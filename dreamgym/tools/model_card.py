"""A model card for a world-model bundle: MODEL_CARD.md + traversal.png + reconstructions.png beside the weights.

    python -m dreamgym.tools.model_card --world-model runs/takecover/world_model [--episodes cache/takecover/episodes] \
        [--fidelity runs/takecover/fidelity]

Data, sizes, training and held-out metrics come from the bundle's ``config.json`` and, through its
provenance, from the V and M run folders it was built from (their ``config.json`` and ``eval.json``);
anything those files do not hold is written as "not recorded". The reconstruction grid uses real frames
from ``--episodes``, else the held-out episodes of V's run (``split.json``); the traversal starts from the
bundle's first stored initial latent (a real frame, the episode's first unless the bundle's
``initial_step`` says otherwise) and shows the latent dims that change the
picture most. ``--fidelity DIR`` adds the key numbers of a ``python -m training.fidelity`` report
(``DIR/fidelity.json``) and its figure (copied beside the card as ``fidelity.png``).
"""

from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamgym.checkpoint import CheckpointError, load_json
from dreamgym.data import ShardError, atomic_write, list_episodes, load_episode
from dreamgym.devices import resolve_device
from dreamgym.envs.registration import dream_id, latent_id
from dreamgym.tools.pictures import latent_traversal, rank_dims, reconstruction_grid, save_png
from dreamgym.world_model import CONFIG_FILE, WEIGHTS_FILE, WorldModel, resolve_bundle

CARD_FILE = "MODEL_CARD.md"
TRAVERSAL_FILE = "traversal.png"
RECONSTRUCTIONS_FILE = "reconstructions.png"
FIDELITY_FILE = "fidelity.png"
FIDELITY_REPORT = "fidelity.json"
NOT_RECORDED = "not recorded"


def fmt(value: Any) -> str:
    """A number or text for the card; None -> "not recorded"."""
    if value is None:
        return NOT_RECORDED
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_seconds(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return NOT_RECORDED
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


@dataclass(frozen=True)
class StageRecord:
    """What a training run folder (V or M) says about itself; empty dicts where it is gone or never said."""

    folder: Path | None
    provenance: dict[str, Any]
    args: dict[str, Any]
    metrics: dict[str, Any]


def stage_record(bundle_provenance: dict[str, Any], stage: str) -> StageRecord:
    """The run folder named by the bundle's provenance[stage] (``vae`` or ``mdnrnn``), read if it still exists."""
    folder = bundle_provenance.get(stage)
    if not isinstance(folder, str) or not (Path(folder) / CONFIG_FILE).is_file():
        return StageRecord(None, {}, {}, {})
    folder = Path(folder)
    try:
        provenance = load_json(folder / CONFIG_FILE).get("provenance", {})
        metrics = load_json(folder / "eval.json") if (folder / "eval.json").is_file() else {}
    except CheckpointError as err:
        print(f"model_card: ignoring unreadable run files ({err})")
        return StageRecord(folder, {}, {}, {})
    metrics = {k: v for k, v in metrics.items() if k not in ("history", "epoch", "step")}
    return StageRecord(folder, provenance, provenance.get("args", {}), metrics)


def heldout_episodes(vae: StageRecord) -> list[Path]:
    """The held-out episodes of V's run (its ``split.json``) that still exist."""
    if vae.folder is None or not (vae.folder / "split.json").is_file():
        return []
    return [p for p in map(Path, load_json(vae.folder / "split.json").get("holdout", [])) if p.is_file()]


def sample_frames(paths: list[Path], count: int, seed: int) -> np.ndarray:
    """Up to ``count`` frames (N, 64, 64, 3), each from a seeded random step of a seeded random episode."""
    if not paths or count < 1:
        return np.empty((0, 64, 64, 3), np.uint8)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(paths), size=count, replace=len(paths) < count)
    frames = []
    for i in picks:
        episode = load_episode(paths[i]).frames
        frames.append(episode[rng.integers(len(episode))])
    return np.stack(frames)


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {name} | {fmt(value)} |" for name, value in rows), ""]


def _pair(args: dict[str, Any], a: str, b: str) -> str:
    return f"{fmt(args.get(a))} / {fmt(args.get(b))}" if args else NOT_RECORDED


def _metrics(title: str, stage: StageRecord) -> str:
    if not stage.metrics:
        return f"- {title}: {NOT_RECORDED}"
    return f"- {title}: " + ", ".join(f"`{k}` {fmt(v)}" for k, v in sorted(stage.metrics.items()))


def data_rows(model: WorldModel, vae: StageRecord, mdnrnn: StageRecord) -> list[tuple[str, Any]]:
    return [
        ("game", model.game.env_id),
        ("V: training frames", vae.provenance.get("train_frames")),
        ("V: training episodes", vae.provenance.get("train_episodes")),
        ("V: held-out episodes", vae.provenance.get("heldout_episodes")),
        ("M: training episodes", mdnrnn.provenance.get("train_episodes")),
        ("M: held-out episodes", mdnrnn.provenance.get("heldout_episodes")),
        ("episodes folder", vae.provenance.get("episodes")),
        ("initial latents (dream starts)", int(model.initial_mu.shape[0])),
        ("dreams start at real frame", model.initial_step),
    ]


def size_rows(model: WorldModel, folder: Path) -> list[tuple[str, Any]]:
    cfg = model.config.mdnrnn
    return [
        ("z (latent size)", cfg.z_size),
        ("M: LSTM units", cfg.hidden_size),
        ("M: mixture components", cfg.num_mixtures),
        ("M: reward head / done head", f"{cfg.reward_head} / {cfg.done_head}"),
        ("V parameters", sum(p.numel() for p in model.vae.parameters())),
        ("M parameters", sum(p.numel() for p in model.mdnrnn.parameters())),
        ("weights file", f"{(folder / WEIGHTS_FILE).stat().st_size / 2**20:.1f} MiB"),
    ]


def training_rows(vae: StageRecord, mdnrnn: StageRecord) -> list[tuple[str, Any]]:
    rows = []
    for name, stage in (("V", vae), ("M", mdnrnn)):
        rows += [
            (f"{name}: optimizer steps", stage.provenance.get("steps")),
            (f"{name}: epochs / batch size", _pair(stage.args, "epochs", "batch_size")),
            (f"{name}: training time", fmt_seconds(stage.provenance.get("train_seconds"))),
        ]
    return rows


def limits(model: WorldModel) -> list[str]:
    reward = (
        "Rewards in the dream are +1 per surviving step, not predicted."
        if model.game.reward_mode == "survival"
        else "Rewards in the dream come from M's reward head, not the game (see `reward_mse`)."
    )
    return [
        "V sees 64x64 frames: small or thin things blur or vanish (see the reconstructions).",
        "The dream is M's guess one step at a time: errors compound and long dreams drift from the game. "
        "`python -m dreamgym.tools.record` shows real, reconstructed and dreamed frames side by side.",
        "A controller can learn to exploit M's mistakes; a higher temperature makes the dream harder to cheat. "
        "Always measure returns in the real game (the latent id above).",
        "M learned from random exploration: states that good play reaches but random play rarely does are "
        "modelled poorly.",
        reward,
        "Episodes end by sampling M's calibrated done head; rare deaths in the data make it less reliable.",
    ]


def _number(value: Any) -> str:
    """A report's number; None there means undefined (too few points, a constant series), not unrecorded."""
    return "undefined" if value is None else fmt(value)


def _series(values: list[Any]) -> str:
    return " / ".join(_number(v) for v in values)


def fidelity_section(report: dict[str, Any], picture: bool) -> list[str]:
    """The card's "Fidelity" section from a ``training.fidelity`` report (``picture``: embed fidelity.png)."""
    loop, outcome = report["open_loop"], report["episode_outcome"]
    done, scatter = report["done_calibration"], report["dream_vs_real"]
    episodes = report["episodes"]
    horizons = " / ".join(f"h{h}" for h in loop["horizons"])
    rows: list[tuple[str, Any]] = []
    for name in [*loop["feedback"], "copy_last_z"]:
        feedback = f"{name} at tau {fmt(loop['temperature'])}" if name == "sample" else name
        rows.append((f"open-loop latent MSE ({feedback}), {horizons}", _series(loop["latent_mse"][name])))
    for name in [*loop["feedback"], "copy_last_z", "v_reconstruction"]:
        rows.append((f"decoded-frame MSE ({name}), {horizons}", _series(loop["frame_mse"][name])))
    rows += [
        (f"episode {outcome['kind']} from the {outcome['head']} head: Pearson (n {outcome['n']})",
         f"{_number(outcome['pearson'])} (baseline, {outcome['baseline']['name']}: "
         f"{_number(outcome['baseline']['pearson'])})"),
        ("done head: Brier score (always the base rate)", f"{fmt(done['brier'])} ({fmt(done['base_rate_brier'])})"),
        ("dream vs real: Spearman / Pearson / slope (n controllers)",
         f"{_number(scatter['spearman'])} / {_number(scatter['pearson'])} / {_number(scatter['slope'])} "
         f"({scatter['n']})"),
    ]  # fmt: skip
    lines = [
        "## Fidelity",
        "",
        f"`python -m training.fidelity` on {episodes['count']} held-out real episodes ({episodes['steps']:,} steps) "
        f"in `{episodes['folder']}`: M rolled open-loop on its own predictions with the recorded actions "
        "(latent and pixel MSE; copy_last_z and V's reconstruction error for scale), its heads teacher-forced.",
        "",
        *_table(rows),
    ]
    return [*lines, f"![fidelity]({FIDELITY_FILE})", ""] if picture else lines


def read_fidelity(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``fidelity.json`` report in ``folder``, or a ValueError saying what is wrong."""
    path = Path(folder) / FIDELITY_REPORT
    if not path.is_file():
        raise ValueError(f"--fidelity {folder}: no {FIDELITY_REPORT} (write one with `python -m training.fidelity`)")
    try:
        report = load_json(path)
        fidelity_section(report, False)
    except (CheckpointError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a training.fidelity report ({type(err).__name__}: {err})") from None
    return report


def card_text(
    model: WorldModel,
    folder: Path,
    vae: StageRecord,
    mdnrnn: StageRecord,
    dims: list[int],
    frames_note: str | None,
    name: str | None = None,
    fidelity: list[str] | None = None,
) -> str:
    """The Markdown of the card; ``frames_note`` says where the reconstructed frames came from (None: no grid);
    ``name`` is what users pass as ``world_model=`` (default: the folder's path); ``fidelity`` the lines of
    the fidelity section (None: none)."""
    name = name or str(folder)
    spec = model.game
    versions = load_json(folder / CONFIG_FILE).get("versions", {})
    if frames_note is not None:
        reconstructions = [
            f"![reconstructions]({RECONSTRUCTIONS_FILE})",
            "",
            f"Each pair of rows: real frames ({frames_note}) above V's reconstructions of them (decoding mu).",
        ]
    else:
        reconstructions = [f"Reconstructions: {NOT_RECORDED} (no real frames found; pass --episodes)."]
    lines = [
        f"# World model: {spec.title} (`{Path(name).name}`)",
        "",
        f"V (a convolutional VAE) and M (an MDN-RNN) of the World Models recipe, trained on `{spec.env_id}`.",
        "",
        "```python",
        "import gymnasium as gym, dreamgym",
        f'dream = gym.make("{dream_id(spec.name)}", world_model="{name}")  # learn inside the dream',
        f'real = gym.make("{latent_id(spec.name)}", world_model="{name}")  # check in the real game',
        "```",
        "",
        "## Data",
        "",
        *_table(data_rows(model, vae, mdnrnn)),
        "## Sizes",
        "",
        *_table(size_rows(model, folder)),
        "## Training",
        "",
        *_table(training_rows(vae, mdnrnn)),
        "## Held-out metrics",
        "",
        _metrics("V (`recon_mse`: squared error per pixel in [0, 1], decoding mu; `kl` per frame)", vae),
        _metrics("M (`nll` of the next z per latent dim; `done_*` at p > 0.5)", mdnrnn),
        "",
        "## Pictures",
        "",
        *reconstructions,
        "",
        f"![latent traversal]({TRAVERSAL_FILE})",
        "",
        f"Latent traversal from a real first frame's latent: each row moves one dim (rows: dims {dims}, the ones "
        "that change the picture most) from -3 to +3 around its value; the middle column is the unchanged frame.",
        "",
        *(fidelity or []),
        "## Known limits",
        "",
        *(f"- {line}" for line in limits(model)),
        "",
        "## Versions",
        "",
        ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or NOT_RECORDED,
        "",
    ]
    return "\n".join(lines)


def write_model_card(world_model: str | os.PathLike, episodes: str | os.PathLike | None = None, frames: int = 8,
                     dims: int = 8, steps: int = 7, seed: int = 0, device: str = "cpu",
                     name: str | None = None, fidelity: str | os.PathLike | None = None) -> Path:  # fmt: skip
    """Writes MODEL_CARD.md, traversal.png and (given real frames) reconstructions.png into the bundle folder;
    ``name`` is how the card tells users to load it (default: the folder's path); ``fidelity`` a folder
    written by ``training.fidelity`` whose numbers (and fidelity.png, copied beside the card) the card shows."""
    if frames < 1 or dims < 1:
        raise ValueError(f"frames and dims must be >= 1, got {frames} and {dims}")
    report = read_fidelity(fidelity) if fidelity is not None else None
    folder = resolve_bundle(world_model)
    model = WorldModel.load(folder, resolve_device(device))
    vae, mdnrnn = stage_record(model.provenance, "vae"), stage_record(model.provenance, "mdnrnn")
    if episodes is not None:
        paths = list_episodes(episodes)
        if not paths:
            raise ValueError(f"no episode files in {str(episodes)!r}")
        frames_note: str | None = f"random steps of episodes in {episodes}"
    else:
        paths, frames_note = heldout_episodes(vae), "random steps of V's held-out episodes"
    try:
        real = sample_frames(paths, frames, seed)
    except ShardError as err:
        raise ValueError(f"cannot read real frames for the reconstruction grid: {err}") from err
    if len(real):
        save_png(folder / RECONSTRUCTIONS_FILE, reconstruction_grid(model.vae, real))
    else:
        frames_note = None
    z_base = model.initial_mu[0].detach().cpu()
    chosen = rank_dims(model.vae, z_base)[: min(dims, model.config.vae.z_size)]
    save_png(folder / TRAVERSAL_FILE, latent_traversal(model.vae, z_base, chosen, steps))
    section = None
    if fidelity is not None and report is not None:
        picture = Path(fidelity) / FIDELITY_FILE
        if picture.is_file():
            atomic_write(folder / FIDELITY_FILE, lambda tmp: shutil.copyfile(picture, tmp))
        section = fidelity_section(report, picture.is_file())
    text = card_text(model, folder, vae, mdnrnn, chosen, frames_note, name, section)
    atomic_write(folder / CARD_FILE, lambda tmp: Path(tmp).write_text(text))
    return folder / CARD_FILE


@dataclass(frozen=True)
class CardArgs:
    world_model: str
    episodes: str | None = None
    frames: int = 8
    dims: int = 8
    steps: int = 7
    seed: int = 0
    device: str = "cpu"
    fidelity: str | None = None


def parse_args(argv: list[str] | None = None) -> CardArgs:
    p = argparse.ArgumentParser(prog="python -m dreamgym.tools.model_card", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--world-model", required=True, help="bundle folder (the card is written into it)")
    p.add_argument("--episodes", help="episode folder for the reconstruction grid (default: V's held-out episodes)")
    p.add_argument("--frames", type=int, default=8, help="real frames in the reconstruction grid")
    p.add_argument("--dims", type=int, default=8, help="latent dims in the traversal")
    p.add_argument("--steps", type=int, default=7, help="pictures per traversal row")
    p.add_argument("--seed", type=int, default=0, help="seed of the frame choice")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--fidelity", help="folder of a `python -m training.fidelity` report to summarise in the card")
    return CardArgs(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    path = write_model_card(a.world_model, a.episodes, a.frames, a.dims, a.steps, a.seed, a.device,
                            fidelity=a.fidelity)  # fmt: skip
    print(f"model_card: wrote {path} and its pictures")


if __name__ == "__main__":
    main()
