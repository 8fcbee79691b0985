"""The pretrained files that ship in this folder, found by name and checked against recorded checksums.

Layout of one shipped game (``dreamgym/pretrained/<game>/``)::

    config.json + model.safetensors        the world-model bundle (fp16 weights, loaded as float32)
    MODEL_CARD.md, *.png                   its model card and pictures
    controllers/<name>/controller.*        dream-trained controllers, with their evaluation.json
    SHA256SUMS                             sha256 of every other file, in ``sha256sum`` format

``shipped_controller("takecover")`` loads the game's default controller (the one named in
``controllers/DEFAULT``); ``verify_checksums`` lists the files that differ from ``SHA256SUMS``.
"""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym

from dreamgym.checkpoint import CHECKSUM_FILE, read_checksums, sha256
from dreamgym.controller import CONTROLLERS_DIR, Controller
from dreamgym.data import atomic_write
from dreamgym.world_model import PRETRAINED_DIR

DEFAULT_FILE = "DEFAULT"


def shipped_files(folder: str | os.PathLike) -> list[Path]:
    """Every file under ``folder`` that the checksum file covers (all but itself), sorted."""
    folder = Path(folder)
    files = (p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return sorted(p for p in files if p.name != CHECKSUM_FILE)


def write_checksums(folder: str | os.PathLike) -> Path:
    """Writes ``<folder>/SHA256SUMS`` for every file below ``folder`` (``sha256sum -c`` can check it)."""
    folder = Path(folder)
    lines = [f"{sha256(p)}  {p.relative_to(folder).as_posix()}\n" for p in shipped_files(folder)]
    atomic_write(folder / CHECKSUM_FILE, lambda tmp: Path(tmp).write_text("".join(lines)))
    return folder / CHECKSUM_FILE


def verify_checksums(folder: str | os.PathLike) -> list[str]:
    """Problems found against ``SHA256SUMS``: changed, missing and unlisted files (empty when all match)."""
    folder = Path(folder)
    sums = folder / CHECKSUM_FILE
    if not sums.is_file():
        return [f"{sums}: checksum file not found"]
    recorded = read_checksums(sums)
    present = {p.relative_to(folder).as_posix() for p in shipped_files(folder)}
    problems = [f"{name}: missing" for name in sorted(set(recorded) - present)]
    problems += [f"{name}: not in {CHECKSUM_FILE}" for name in sorted(present - set(recorded))]
    problems += [f"{name}: checksum differs" for name in sorted(present & set(recorded))
                 if sha256(folder / name) != recorded[name]]  # fmt: skip
    return problems


def shipped_game_dir(game: str) -> Path:
    folder = PRETRAINED_DIR / game
    if not folder.is_dir():
        available = sorted(p.name for p in PRETRAINED_DIR.glob("*") if (p / CHECKSUM_FILE).is_file())
        raise FileNotFoundError(f"no shipped files for game {game!r}; shipped games: {available}")
    return folder


def shipped_controller_names(game: str) -> list[str]:
    return sorted(p.name for p in (shipped_game_dir(game) / CONTROLLERS_DIR).glob("*") if p.is_dir())


def shipped_controller_dir(game: str, name: str | None = None) -> Path:
    """Folder of shipped controller ``name`` of ``game`` (default: the one named in ``controllers/DEFAULT``)."""
    controllers = shipped_game_dir(game) / CONTROLLERS_DIR
    if name is None:
        default = controllers / DEFAULT_FILE
        if not default.is_file():
            raise FileNotFoundError(f"game {game!r} ships no default controller ({default} missing)")
        name = default.read_text().strip()
    folder = controllers / name
    if not folder.is_dir():
        names = shipped_controller_names(game)
        raise FileNotFoundError(f"game {game!r} ships no controller {name!r}; it ships {names}")
    return folder


def shipped_controller(game: str, name: str | None = None,
                       env: gym.Env | gym.vector.VectorEnv | None = None) -> Controller:  # fmt: skip
    """Loads a shipped controller (checked against ``env``'s spaces when given)."""
    return Controller.load(shipped_controller_dir(game, name), env)
