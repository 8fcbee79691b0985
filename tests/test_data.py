"""Episode shards: round trip, atomic writes, corrupt-file detection, holdout split and the readers."""

from __future__ import annotations

import dataclasses
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dreamgym.data import (
    Episode,
    ShardError,
    atomic_write,
    episode_path,
    iter_frame_batches,
    list_episodes,
    load_arrays,
    load_episode,
    pad_episodes,
    save_arrays,
    save_episode,
    split_holdout,
)
from dreamgym.games import FRAME_SHAPE


def make_episode(steps: int, first_id: int = 0, seed: int = 7) -> Episode:
    """An episode whose frame t is filled with the number ``first_id + t`` (two bytes, so ids stay unique)."""
    ids = np.arange(first_id, first_id + steps)
    frames = np.zeros((steps, *FRAME_SHAPE), np.uint8)
    frames[..., 0] = (ids % 256)[:, None, None]
    frames[..., 1] = (ids // 256)[:, None, None]
    terminated = np.zeros(steps, bool)
    terminated[-1] = True
    return Episode(
        frames=frames,
        actions=np.arange(steps, dtype=np.int64) % 3,
        rewards=np.ones(steps, np.float64),
        terminated=terminated,
        truncated=np.zeros(steps, np.int8),
        seed=seed,
        game="takecover",
    )


def frame_ids(frames: np.ndarray) -> np.ndarray:
    return frames[:, 0, 0, 0].astype(np.int64) + 256 * frames[:, 0, 0, 1].astype(np.int64)


def test_episode_round_trip_keeps_values_and_normalises_dtypes(tmp_path: Path) -> None:
    episode = make_episode(5, seed=2**32 - 1)
    path = episode_path(tmp_path, 3)
    assert path.name == "episode_000003.npz"
    save_episode(path, episode)
    loaded = load_episode(path)
    assert len(loaded) == 5
    assert np.array_equal(loaded.frames, episode.frames) and loaded.frames.dtype == np.uint8
    assert np.array_equal(loaded.actions, episode.actions)
    assert loaded.rewards.dtype == np.float32 and loaded.rewards.tolist() == [1.0] * 5
    assert loaded.terminated.dtype == bool and loaded.terminated.tolist() == [False] * 4 + [True]
    assert loaded.truncated.dtype == bool and not loaded.truncated.any()
    assert (loaded.seed, loaded.game) == (2**32 - 1, "takecover")
    assert loaded.expert_actions is None


def test_expert_labels_round_trip_when_present(tmp_path: Path) -> None:
    labels = np.linspace(-1, 1, 15, dtype=np.float32).reshape(5, 3)
    episode = dataclasses.replace(make_episode(5), actions=np.zeros((5, 3), np.float32), expert_actions=labels)
    save_episode(tmp_path / "e.npz", episode)
    assert np.array_equal(load_episode(tmp_path / "e.npz").expert_actions, labels)


def test_list_episodes_is_in_index_order_and_skips_temporary_files(tmp_path: Path) -> None:
    for index in (10, 2, 0):
        save_episode(episode_path(tmp_path, index), make_episode(1))
    (tmp_path / ".episode_000001.npz.abc.tmp").write_bytes(b"partial")
    (tmp_path / "notes.npz").write_bytes(b"")
    assert [p.name for p in list_episodes(tmp_path)] == [f"episode_{i:06d}.npz" for i in (0, 2, 10)]


def test_atomic_write_leaves_nothing_behind_when_the_write_fails(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.npz"
    save_arrays(path, {"x": np.arange(3)})

    def failing(tmp: str) -> None:
        Path(tmp).write_bytes(b"half a file")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, failing)
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.npz"]
    assert load_arrays(path, ["x"])["x"].tolist() == [0, 1, 2]


def _first_member_data_offset(path: Path) -> int:
    with zipfile.ZipFile(path) as archive:
        offset = archive.infolist()[0].header_offset
    header = path.read_bytes()[offset : offset + 30]
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return offset + 30 + name_len + extra_len


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(5000))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _bad_compressed_data(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[_first_member_data_offset(path)] = 0xFF  # an invalid deflate block type
    path.write_bytes(bytes(data))


def _flipped_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


def _plain_npy(path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))


def _pickled_objects(path: Path) -> None:
    np.savez(path, **_fields(make_episode(4), frames=np.array([None] * 4, dtype=object)))


@pytest.mark.parametrize(
    "damage", [_truncate, _random_bytes, _empty, _bad_compressed_data, _flipped_bytes, _plain_npy, _pickled_objects]
)
def test_damaged_shard_raises_shard_error_naming_the_file(tmp_path: Path, damage) -> None:
    path = episode_path(tmp_path, 0)
    save_episode(path, make_episode(20))
    damage(path)
    with pytest.raises(ShardError, match=re.escape(str(path))):
        load_episode(path)


def test_foreign_npz_reports_its_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "episode_000000.npz"
    np.savez(path, obs=np.zeros((4, 64, 64, 3), np.uint8), action=np.zeros(4))
    with pytest.raises(ShardError, match=re.escape(f"{path}: not a dreamgym file") + ".*'frames'"):
        load_episode(path)
    with pytest.raises(ShardError, match=re.escape(f"{tmp_path / 'nope.npz'}: file not found")):
        load_episode(tmp_path / "nope.npz")


def _fields(episode: Episode, **changes: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {
        "frames": episode.frames,
        "actions": episode.actions,
        "rewards": episode.rewards,
        "terminated": episode.terminated,
        "truncated": episode.truncated,
        "seed": np.asarray(episode.seed),
        "game": np.asarray(episode.game),
        "version": np.asarray(1),
    }
    return arrays | changes


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": np.asarray(99)}, "shard version 99"),
        ({"frames": np.zeros((4, 32, 32, 3), np.uint8)}, "frames"),
        ({"frames": np.zeros((4, 64, 64, 3), np.float32)}, "frames"),
        ({"frames": np.zeros((3, 64, 64, 3), np.uint8)}, "frames"),
        ({"rewards": np.zeros(5, np.float32)}, "rewards"),
        ({"terminated": np.zeros((4, 1), bool)}, "terminated"),
        ({"expert_actions": np.zeros((3,), np.int64)}, "expert_actions"),
    ],
)
def test_inconsistent_shard_is_rejected(tmp_path: Path, changes: dict, message: str) -> None:
    path = episode_path(tmp_path, 0)
    save_arrays(path, _fields(make_episode(4), **changes))
    with pytest.raises(ShardError, match=message):
        load_episode(path)


def test_split_holdout_is_a_deterministic_partition() -> None:
    paths = [Path(f"episode_{i:06d}.npz") for i in range(10)]
    train, hold = split_holdout(paths, 0.2, seed=3)
    assert len(hold) == 2 and sorted(train + hold) == paths
    assert split_holdout(paths, 0.2, seed=3) == (train, hold)
    assert split_holdout(paths, 0.2, seed=4) != (train, hold)
    assert split_holdout(paths, 0.01)[1] != []  # at least one held out
    assert split_holdout(paths, 0.0) == (paths, [])
    assert split_holdout(paths[:1], 0.5) == (paths[:1], [])


@pytest.fixture
def shards(tmp_path: Path) -> list[Path]:
    """Seven episodes of different lengths; frame ids run 0..N-1 over all of them."""
    lengths = [3, 17, 1, 40, 8, 25, 6]
    starts = np.cumsum([0, *lengths[:-1]])
    for index, (start, steps) in enumerate(zip(starts, lengths, strict=True)):
        save_episode(episode_path(tmp_path, index), make_episode(steps, first_id=int(start)))
    return list_episodes(tmp_path)


@pytest.mark.parametrize(("batch_size", "buffer_episodes"), [(16, 2), (16, 32), (1, 3), (200, 2)])
def test_iter_frame_batches_covers_every_frame_once(shards: list[Path], batch_size: int, buffer_episodes: int) -> None:
    total = 100
    batches = list(iter_frame_batches(shards, batch_size, np.random.default_rng(0), buffer_episodes))
    assert all(b.dtype == np.uint8 and b.shape[1:] == FRAME_SHAPE for b in batches)
    assert [len(b) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)  # only the last may be short
    ids = frame_ids(np.concatenate(batches))
    assert sorted(ids.tolist()) == list(range(total))


def test_iter_frame_batches_shuffles_reproducibly(shards: list[Path]) -> None:
    def ids(seed: int) -> list[int]:
        return frame_ids(np.concatenate(list(iter_frame_batches(shards, 10, np.random.default_rng(seed), 3)))).tolist()

    assert ids(0) == ids(0)
    assert ids(0) != ids(1)
    assert ids(0) != sorted(ids(0))


def test_iter_frame_batches_rejects_bad_sizes(shards: list[Path]) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_frame_batches(shards, 0, np.random.default_rng(0)))
    assert list(iter_frame_batches([], 4, np.random.default_rng(0))) == []


def test_pad_episodes_cuts_pads_and_masks() -> None:
    series = [np.arange(n * 2).reshape(n, 2) + 1 for n in (3, 5, 8)]
    out, mask = pad_episodes(series, seq_len=5)
    assert out.shape == (3, 5, 2) and out.dtype == series[0].dtype
    assert mask.dtype == bool
    assert mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5, [True] * 5]
    for row, s in zip(out, series, strict=True):
        n = min(len(s), 5)
        assert np.array_equal(row[:n], s[:n])  # each row starts at its episode's first step
        assert not row[n:].any()
    frames, frames_mask = pad_episodes([make_episode(2).frames], seq_len=4)
    assert frames.shape == (1, 4, *FRAME_SHAPE) and frames.dtype == np.uint8
    assert frames_mask.tolist() == [[True, True, False, False]]
    with pytest.raises(ValueError, match="at least one episode"):
        pad_episodes([], seq_len=4)
