"""Ship a trained world model and its controllers inside the package, so ``gymnasium.make`` needs no training.

    python -m training.ship --world-model runs/takecover/world_model \
        --controllers tau1.15=runs/takecover/cmaes/tau1.15/mean --default tau1.15

Writes ``dreamgym/pretrained/<game>/`` (see :mod:`dreamgym.pretrained`): the bundle with fp16 weights (they
load as float32; the fp16 rounding error is measured on a dream rollout and recorded in the bundle's
provenance), its model card and pictures, each controller with its ``evaluation.json`` files, and
``SHA256SUMS``. The folder is assembled beside the target and renamed onto it, so a failed run leaves
the previous shipped files intact.

    python -m training.ship --world-model carracing --controllers dagger=runs/carracing-dagger/best

With ``--world-model`` naming the shipped folder it writes to, only the controllers and extras are
replaced: the bundle's weights, config, pictures and model card are kept byte for byte (re-saving shipped
fp16 weights would record a rounding error of zero, and the card's training records live in run folders
that may be gone).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamgym.cli_args import parse_args
from dreamgym.controller import Controller
from dreamgym.pretrained import CONTROLLERS_DIR, DEFAULT_FILE, write_checksums
from dreamgym.tools.model_card import CARD_FILE, RECONSTRUCTIONS_FILE, TRAVERSAL_FILE, write_model_card
from dreamgym.world_model import CONFIG_FILE, PRETRAINED_DIR, WEIGHTS_FILE, WorldModel, resolve_bundle

CONTROLLERS_HEADING = "\n## Shipped controllers\n"
BUNDLE_FILES = (CONFIG_FILE, WEIGHTS_FILE, RECONSTRUCTIONS_FILE, TRAVERSAL_FILE)
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class ShipArgs:
    world_model: str = "runs/takecover/world_model"
    """bundle folder written by training.bundle"""
    controllers: str = ""
    """comma-separated name=folder pairs of controllers (folders written by agents.cmaes)"""
    default: str | None = None
    """name of the controller that shipped_controller(game) loads (default: the first one)"""
    episodes: str | None = None
    """real episode folder for the model card's reconstruction grid (default: V's held-out episodes)"""
    extras: str = ""
    """comma-separated files copied beside the weights (GIFs, the temperature-sweep table and plot) and shown
    in the model card"""
    dtype: str = "float16"
    """weight dtype on disk: float16, bfloat16 or float32"""
    dest: str | None = None
    """target folder (default: dreamgym/pretrained/<game>)"""


def parse_controllers(text: str) -> dict[str, Path]:
    """``"a=runs/x,b=runs/y"`` -> {"a": Path("runs/x"), "b": Path("runs/y")}."""
    pairs: dict[str, Path] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--controllers takes name=folder pairs, got {item!r}")
        if name in pairs:
            raise ValueError(f"--controllers names {name!r} twice")
        pairs[name] = Path(folder)
    return pairs


@torch.no_grad()
def rounding_error(model: WorldModel, dtype: torch.dtype, steps: int = 200, batch: int = 64,
                   seed: int = 0) -> dict[str, float]:  # fmt: skip
    """Largest differences between ``model`` and its copy rounded to ``dtype``, on the same dream inputs.

    The fp32 model dreams ``steps`` steps from its stored initial latents under random actions; the
    rounded copy reads the same inputs. Reported: V's decoded pixels (in [0, 1]), M's mixture means and
    log-weights, and the calibrated done probability.
    """
    rounded = WorldModel(model.config, model.initial_mu, model.initial_logvar)
    rounded.load_state_dict({k: v.to(dtype).to(v.dtype) for k, v in model.state_dict().items()})
    rng = np.random.default_rng(seed)
    spec = model.game
    z = model.initial_mu[torch.arange(batch) % model.initial_mu.shape[0]]
    state_a = state_b = model.mdnrnn.initial_state(batch)
    diff = {"pixels": 0.0, "mixture_mu": 0.0, "mixture_log_pi": 0.0, "done_probability": 0.0}
    for t in range(steps):
        tanh_out = rng.uniform(-1, 1, (batch, spec.controller_outputs)).astype(np.float32)
        action = spec.encode_action(torch.as_tensor(spec.squash_action(tanh_out)))
        restart = torch.full((batch,), float(t == 0))
        out_a, state_a = model.mdnrnn.step(z, action, restart, state_a)
        out_b, state_b = rounded.mdnrnn.step(z, action, restart, state_b)
        diff["mixture_mu"] = max(diff["mixture_mu"], (out_a.mu - out_b.mu).abs().max().item())
        diff["mixture_log_pi"] = max(diff["mixture_log_pi"], (out_a.log_pi - out_b.log_pi).abs().max().item())
        p_a, p_b = model.mdnrnn.done_probability(out_a.done_logit), rounded.mdnrnn.done_probability(out_b.done_logit)
        diff["done_probability"] = max(diff["done_probability"], (p_a - p_b).abs().max().item())
        if t % 50 == 0:
            diff["pixels"] = max(diff["pixels"], (model.vae.decode(z) - rounded.vae.decode(z)).abs().max().item())
        z = out_a.mu.gather(-1, out_a.log_pi.argmax(-1, keepdim=True)).squeeze(-1)
    return diff


def controllers_section(staging: Path, game: str, names: list[str], default: str | None, extras: list[Path]) -> str:
    """Markdown appended to the model card: each shipped controller's recorded scores, then the extra files."""
    lines = [CONTROLLERS_HEADING.rstrip("\n"), ""]
    if not names:
        lines.append("None.")
    for name in names:
        lines.append(f"- `{name}`{' (default)' if name == default else ''}: "
                     f"`dreamgym.pretrained.shipped_controller(\"{game}\", \"{name}\")`")  # fmt: skip
        for report in sorted((staging / CONTROLLERS_DIR / name).glob("evaluation*.json")):
            r = json.loads(report.read_text())
            lines.append(f"  - {r['env']} {json.dumps(r.get('env_kwargs', {}))}: {r['mean']:.1f} ± {r['std']:.1f} "
                         f"over {r['episodes']} episodes, seeds {r['seeds'][0]}..{r['seeds'][-1]}")  # fmt: skip
    for extra in extras:
        shown = (
            f"![{extra.stem}]({extra.name})" if extra.suffix in (".png", ".gif") else f"[{extra.name}]({extra.name})"
        )
        lines += ["", shown]
    return "\n".join(lines) + "\n"


def relative_to_cwd(path: Any) -> Any:
    """Run-folder paths in provenance, written relative to the working folder (the repo root when shipping)."""
    if not isinstance(path, str) or not os.path.isabs(path):
        return path
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def save_bundle(model: WorldModel, staging: Path, args: ShipArgs, name: str) -> None:
    """The bundle at ``args.dtype`` with its measured rounding error, and a fresh model card and pictures."""
    dtype = DTYPES[args.dtype]
    model.provenance = {k: relative_to_cwd(v) for k, v in model.provenance.items()}
    model.provenance["weights_dtype"] = args.dtype
    model.provenance["rounding_error"] = rounding_error(model, dtype)
    model.save(staging, dtype=dtype)
    write_model_card(staging, args.episodes, name=name)


def keep_bundle(shipped: Path, staging: Path) -> None:
    """The shipped bundle's files as they are, and its model card up to its controllers section."""
    for name in BUNDLE_FILES:
        if (shipped / name).is_file():
            shutil.copy2(shipped / name, staging / name)
    card = (shipped / CARD_FILE).read_text()
    (staging / CARD_FILE).write_text(card.split(CONTROLLERS_HEADING)[0])


def ship(args: ShipArgs) -> Path:
    """Writes the shipped folder; returns it."""
    if args.dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {sorted(DTYPES)}, got {args.dtype!r}")
    controllers = parse_controllers(args.controllers)
    default = args.default or next(iter(controllers), None)
    if default is not None and default not in controllers:
        raise ValueError(f"--default {default!r} is not among --controllers {sorted(controllers)}")
    model = WorldModel.load(args.world_model)
    dest = Path(args.dest) if args.dest else PRETRAINED_DIR / model.config.game
    loaded = {name: Controller.load(folder) for name, folder in controllers.items()}
    extras = [Path(p.strip()) for p in args.extras.split(",") if p.strip()]
    missing = [str(p) for p in extras if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"--extras: no such files {missing}")

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the shipped folder is package data
    try:
        if resolve_bundle(args.world_model).resolve() == dest.resolve():
            keep_bundle(dest, staging)
        else:
            save_bundle(model, staging, args, name=dest.name if dest.parent == PRETRAINED_DIR else str(dest))
        for name, controller in loaded.items():
            source = controllers[name]
            target = staging / CONTROLLERS_DIR / name
            controller.save(target, provenance={"trained_in": str(source)})
            for report in sorted(source.glob("evaluation*.json")):
                shutil.copy2(report, target / report.name)
        if default is not None:
            (staging / CONTROLLERS_DIR / DEFAULT_FILE).write_text(default + "\n")
        for extra in extras:
            shutil.copy2(extra, staging / extra.name)
        card = staging / CARD_FILE
        card.write_text(
            card.read_text() + controllers_section(staging, model.config.game, list(loaded), default, extras)
        )
        write_checksums(staging)
        backup = dest.with_name(f".{dest.name}.old")
        if dest.exists():
            shutil.rmtree(backup, ignore_errors=True)
            dest.rename(backup)
        staging.rename(dest)
        shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"ship: wrote {dest} ({size / 2**20:.1f} MiB, {len(loaded)} controllers, weights {args.dtype})")
    print(f"ship: {args.dtype} rounding error {model.provenance['rounding_error']}")
    return dest


def main(argv: list[str] | None = None) -> None:
    ship(parse_args(ShipArgs, argv, __doc__))


if __name__ == "__main__":
    main()
