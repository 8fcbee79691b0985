"""Episode shards on disk and readers that stream them without holding a dataset in RAM.

One compressed ``.npz`` per episode, named ``episode_000042.npz``. Of an episode of T steps it holds
the frame seen before each action (T, 64, 64, 3) uint8, the controller actions (T, ...), rewards (T,),
terminated/truncated flags (T,) (set on the step that ended the episode), the seed that reproduces it,
the game name and, optionally, the game's scripted expert's action in each state (T, ...), a label for
behaviour cloning that need not be the action played. Writes go to a temporary file that is renamed
into place, so a shard with its final name is always complete.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamgym.games import FRAME_SHAPE

SHARD_VERSION = 1
_KEYS = ("frames", "actions", "rewards", "terminated", "truncated", "seed", "game", "version")


class ShardError(ValueError):
    """A shard is unreadable, truncated or not a dreamgym episode."""


@dataclass(frozen=True)
class Episode:
    """One recorded episode; see the module docstring for shapes."""

    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    seed: int
    game: str
    expert_actions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.actions)


def episode_path(root: str | os.PathLike, index: int) -> Path:
    return Path(root) / f"episode_{index:06d}.npz"


def list_episodes(root: str | os.PathLike) -> list[Path]:
    """Finished shards under ``root``, in index order (temporary files are not listed)."""
    return sorted(Path(root).glob("episode_[0-9]*.npz"))


def atomic_write(path: str | os.PathLike, write: Any, suffix: str = "") -> None:
    """Calls ``write(tmp_path)`` then renames the temporary file onto ``path``.

    The temporary file sits in the same folder (so the rename is atomic), is named after this process
    (``.<name>.pid<PID>.<random>.tmp``: see :func:`remove_stale_temps`) and is removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.pid{os.getpid()}.", suffix=f"{suffix}.tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale_temps(root: str | os.PathLike) -> None:
    """Deletes the temporary shard files that killed runs left in ``root``: those whose writing process (named
    in the file name) is gone. Call it holding ``root``'s :func:`dreamgym.locks.folder_lock`; a live process's
    file is kept even so."""
    for tmp in Path(root).glob(".episode_*.tmp"):
        writer = re.search(r"\.pid(\d+)\.", tmp.name)
        if writer is None or not _alive(int(writer[1])):
            tmp.unlink(missing_ok=True)


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Atomically writes a compressed npz (no pickled objects)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            named: dict[str, Any] = arrays  # numpy's stub would match a name to savez's allow_pickle: bool
            np.savez_compressed(f, **named)

    atomic_write(path, write)


def load_arrays(
    path: str | os.PathLike, keys: Sequence[str], optional: Sequence[str] | None = ()
) -> dict[str, np.ndarray]:
    """Reads the named arrays of an npz (and those of ``optional`` it holds; None: every other array it holds),
    raising :class:`ShardError` naming the file on any problem."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ShardError(f"{path}: not an npz archive")
        with data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise ShardError(f"{path}: not a dreamgym file (missing {missing})")
            extra = [k for k in data.files if k not in keys] if optional is None else optional
            return {k: data[k] for k in [*keys, *(k for k in extra if k in data.files)]}
    except ShardError:
        raise
    except FileNotFoundError as err:
        raise ShardError(f"{path}: file not found") from err
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as err:
        raise ShardError(f"{path}: corrupt or truncated ({type(err).__name__}: {err})") from err


def update_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Atomically rewrites the npz at ``path`` with ``arrays`` added or replacing those of the same name."""
    save_arrays(path, load_arrays(path, (), optional=None) | arrays)


def save_episode(path: str | os.PathLike, episode: Episode) -> None:
    save_arrays(
        path,
        {
            "frames": episode.frames,
            "actions": episode.actions,
            "rewards": episode.rewards.astype(np.float32),
            "terminated": episode.terminated.astype(bool),
            "truncated": episode.truncated.astype(bool),
            "seed": np.asarray(episode.seed, dtype=np.int64),
            "game": np.asarray(episode.game),
            "version": np.asarray(SHARD_VERSION),
        }
        | ({} if episode.expert_actions is None else {"expert_actions": episode.expert_actions}),
    )


def load_episode(path: str | os.PathLike) -> Episode:
    """Loads and validates one shard."""
    data = load_arrays(path, _KEYS, optional=("expert_actions",))
    frames = data["frames"]
    steps = len(data["actions"])
    if int(data["version"]) != SHARD_VERSION:
        raise ShardError(f"{path}: shard version {int(data['version'])}, expected {SHARD_VERSION}")
    if frames.dtype != np.uint8 or frames.shape[1:] != FRAME_SHAPE or len(frames) != steps:
        raise ShardError(f"{path}: frames {frames.shape} {frames.dtype}, expected ({steps}, 64, 64, 3) uint8")
    for key in ("rewards", "terminated", "truncated"):
        if data[key].shape != (steps,):
            raise ShardError(f"{path}: {key} has shape {data[key].shape}, expected ({steps},)")
    expert = data.get("expert_actions")
    if expert is not None and expert.shape != data["actions"].shape:
        raise ShardError(f"{path}: expert_actions {expert.shape}, expected the actions' {data['actions'].shape}")
    return Episode(
        frames=frames,
        actions=data["actions"],
        rewards=data["rewards"],
        terminated=data["terminated"],
        truncated=data["truncated"],
        seed=int(data["seed"]),
        game=str(data["game"]),
        expert_actions=expert,
    )


def split_holdout(paths: Sequence[Path], fraction: float, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """Deterministic (train, held-out) split of shard paths; at least one held out when fraction > 0."""
    order = np.random.default_rng(seed).permutation(len(paths))
    n_hold = max(1, round(fraction * len(paths))) if fraction > 0 and len(paths) > 1 else 0
    hold = sorted(paths[i] for i in order[:n_hold])
    train = sorted(paths[i] for i in order[n_hold:])
    return train, hold


def iter_frame_batches(
    paths: Sequence[Path], batch_size: int, rng: np.random.Generator, buffer_episodes: int = 32
) -> Iterator[np.ndarray]:
    """Shuffled (B, 64, 64, 3) uint8 batches over every frame of ``paths``, one pass.

    Episodes are visited in random order and mixed in a buffer of ``buffer_episodes`` episodes, so memory
    stays bounded by the buffer while consecutive frames of one episode rarely share a batch. Frames left
    over from one buffer open the next, so every batch is full except the last one of the pass.
    """
    if batch_size < 1 or buffer_episodes < 1:
        raise ValueError(f"batch_size and buffer_episodes must be >= 1, got {batch_size} and {buffer_episodes}")
    order = rng.permutation(len(paths))
    leftover = np.empty((0, *FRAME_SHAPE), dtype=np.uint8)
    for start in range(0, len(order), buffer_episodes):
        episodes = [load_episode(paths[i]).frames for i in order[start : start + buffer_episodes]]
        frames = np.concatenate([leftover, *episodes])
        frames = frames[rng.permutation(len(frames))]
        full = len(frames) - len(frames) % batch_size
        for b in range(0, full, batch_size):
            yield frames[b : b + batch_size]
        leftover = frames[full:]
    if len(leftover):
        yield leftover


def pad_episodes(series: Sequence[np.ndarray], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Stacks per-episode arrays (T_i, ...) from their first step into (B, seq_len, ...) plus a mask.

    Episodes longer than ``seq_len`` are cut, shorter ones zero-padded; ``mask[b, t]`` is True where
    step t is real. Every row starts at its episode's first step, so an LSTM fed these rows sees h = 0
    only at a true episode start.
    """
    if not series:
        raise ValueError("pad_episodes needs at least one episode")
    first = series[0]
    out = np.zeros((len(series), seq_len, *first.shape[1:]), dtype=first.dtype)
    mask = np.zeros((len(series), seq_len), dtype=bool)
    for b, s in enumerate(series):
        n = min(len(s), seq_len)
        out[b, :n] = s[:n]
        mask[b, :n] = True
    return out, mask
