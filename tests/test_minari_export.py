"""Minari export: shards -> Minari dataset -> minari.load_dataset gives back every array, seed and space."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest

import dreamgym.minari_export as export_module
from dreamgym.data import Episode, episode_path, list_episodes, load_episode, save_episode
from dreamgym.games import CARRACING, TAKECOVER
from dreamgym.minari_export import OBSERVATION_SPACE, MinariExportError, datasets_path, export_minari
from tests.test_training import write_episodes
from training.export_minari import main

DATASET = "dreamgym/takecover/random-v0"


@pytest.fixture(autouse=True)
def no_home_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Minari's default root is a temporary folder: nothing goes to ~/.minari even if a test forgets data_path."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "default_root"))


def load(data_path: Path, dataset_id: str = DATASET) -> minari.MinariDataset:
    with datasets_path(data_path):
        return minari.load_dataset(dataset_id)


def assert_round_trip(dataset: minari.MinariDataset, shards: list[Path]) -> None:
    """Every episode of ``dataset`` holds exactly its shard's arrays and seed (T + 1 observations, last repeated)."""
    assert dataset.total_episodes == len(shards) and len(dataset) == len(shards)
    metadata = list(dataset.storage.get_episode_metadata(range(len(shards))))
    for i, (shard, episode, meta) in enumerate(zip(shards, dataset.iterate_episodes(), metadata, strict=True)):
        want = load_episode(shard)
        assert episode.id == i and meta["id"] == i and meta["shard"] == shard.name
        assert meta["seed"] == want.seed and isinstance(meta["seed"], int)
        assert episode.observations.dtype == np.uint8 and episode.observations.shape == (len(want) + 1, 64, 64, 3)
        assert np.array_equal(episode.observations[:-1], want.frames)
        assert np.array_equal(episode.observations[-1], want.frames[-1])
        pairs = [(episode.actions, want.actions), (episode.rewards, want.rewards),
                 (episode.terminations, want.terminated), (episode.truncations, want.truncated)]  # fmt: skip
        for got, expected in pairs:
            assert got.dtype == expected.dtype and np.array_equal(got, expected)
        if want.expert_actions is None:
            assert episode.infos == {}
        else:
            assert np.array_equal(episode.infos["expert_actions"][:-1], want.expert_actions)
    assert dataset.total_steps == sum(len(load_episode(s)) for s in shards)


def test_takecover_round_trip(tmp_path: Path) -> None:
    shards = write_episodes(tmp_path / "episodes", 3, min_len=4, max_len=9)
    folder = export_minari(tmp_path / "episodes", DATASET, data_path=tmp_path / "minari", author="tests")
    assert folder == tmp_path / "minari" / DATASET and (folder / "data" / "main_data.hdf5").is_file()
    assert not (tmp_path / "default_root" / "dreamgym").exists()
    dataset = load(tmp_path / "minari")
    assert_round_trip(dataset, shards)
    assert dataset.observation_space == OBSERVATION_SPACE and dataset.action_space == gym.spaces.Discrete(3)
    assert dataset.env_spec.id == TAKECOVER.env_id and dataset.env_spec.max_episode_steps == TAKECOVER.max_episode_steps
    metadata = dataset.storage.metadata
    assert metadata["author"] == {"tests"} and metadata["jpeg_encoding"] is False
    assert "to_game_action" in metadata["description"] and metadata["requirements"] == [TAKECOVER.package]


def carracing_episode(seed: int, steps: int, truncated: bool) -> Episode:
    rng = np.random.default_rng(seed)
    ends = np.zeros(steps, bool)
    ends[-1] = True
    return Episode(
        frames=rng.integers(0, 256, (steps, 64, 64, 3), dtype=np.uint8),
        actions=rng.uniform(-1, 1, (steps, 3)).astype(np.float32),
        rewards=rng.normal(size=steps).astype(np.float32),
        terminated=ends & (not truncated),
        truncated=ends & truncated,
        seed=2**32 - 1 - seed,
        game="carracing",
        expert_actions=rng.uniform(-1, 1, (steps, 3)).astype(np.float32),
    )


def test_carracing_round_trip_keeps_box_actions_truncations_and_expert_labels(tmp_path: Path) -> None:
    for i, (steps, truncated) in enumerate([(5, True), (3, False)]):
        save_episode(episode_path(tmp_path / "episodes", i), carracing_episode(i, steps, truncated))
    export_minari(tmp_path / "episodes", "dreamgym/carracing/expert-v2", data_path=tmp_path / "minari")
    dataset = load(tmp_path / "minari", "dreamgym/carracing/expert-v2")
    assert_round_trip(dataset, list_episodes(tmp_path / "episodes"))
    assert dataset.action_space == CARRACING.action_space and dataset.env_spec.id == "CarRacing-v3"
    assert dataset.sample_episodes(1)[0].truncations.dtype == bool


def test_jpeg_encoding_is_smaller_and_close(tmp_path: Path) -> None:
    shards = write_episodes(tmp_path / "episodes", 2, min_len=20, max_len=20)
    raw = export_minari(tmp_path / "episodes", "dg/raw-v0", data_path=tmp_path / "minari")
    jpeg = export_minari(tmp_path / "episodes", "dg/jpeg-v0", data_path=tmp_path / "minari", jpeg_encoding=True)
    size = {f: (f / "data" / "main_data.hdf5").stat().st_size for f in (raw, jpeg)}
    assert size[jpeg] < size[raw] / 3
    episode = next(load(tmp_path / "minari", "dg/jpeg-v0").iterate_episodes())
    frames = load_episode(shards[0]).frames.astype(int)
    assert np.abs(episode.observations[:-1].astype(int) - frames).mean() < 4


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    root = tmp_path / "minari"
    with pytest.raises(MinariExportError, match="does not exist"):
        export_minari(tmp_path / "nowhere", DATASET, data_path=root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MinariExportError, match="no episode shards"):
        export_minari(tmp_path / "empty", DATASET, data_path=root)
    write_episodes(tmp_path / "episodes", 2, min_len=3, max_len=4)
    with pytest.raises(MinariExportError, match="malformed dataset id"):
        export_minari(tmp_path / "episodes", "dreamgym/no-version", data_path=root)
    save_episode(episode_path(tmp_path / "episodes", 5), carracing_episode(0, 2, False))
    with pytest.raises(MinariExportError, match="mixes games"):
        export_minari(tmp_path / "episodes", DATASET, data_path=root)
    assert not (root / "dreamgym").exists()


def test_existing_dataset_is_refused_unless_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_episodes(tmp_path / "episodes", 2, min_len=3, max_len=4)
    argv = ["--episodes", str(tmp_path / "episodes"), "--dataset-id", DATASET, "--data-path", str(tmp_path / "m")]
    assert main(argv) == 0 and "wrote Minari dataset" in capsys.readouterr().out
    assert main(argv) == 1 and "already exists" in capsys.readouterr().err
    shards = write_episodes(tmp_path / "episodes", 3, seed=1, min_len=3, max_len=4)  # rewrites 0, 1 and adds 2
    assert main([*argv, "--overwrite", "true"]) == 0
    assert_round_trip(load(tmp_path / "m"), shards)
    assert main(["--episodes", str(tmp_path / "none"), "--dataset-id", DATASET]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "m" / "dreamgym" / "other-v0" / "keep").mkdir(parents=True)  # a folder, not a dataset
    assert main([*argv[:3], "dreamgym/other-v0", *argv[4:], "--overwrite", "true"]) == 1
    assert "not a Minari dataset" in capsys.readouterr().err and (tmp_path / "m" / "dreamgym" / "other-v0").is_dir()


def test_a_failed_export_leaves_no_partial_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_episodes(tmp_path / "episodes", 3, min_len=3, max_len=4)
    calls = []

    def failing(path: Path) -> Episode:
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return load_episode(path)

    monkeypatch.setattr(export_module, "load_episode", failing)
    with pytest.raises(OSError, match="disk full"):
        export_minari(tmp_path / "episodes", DATASET, data_path=tmp_path / "m")
    assert not (tmp_path / "m" / DATASET).exists()


def test_missing_minari_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "minari", None)
    with pytest.raises(ImportError, match=r"pip install 'dreamgym\[minari\]'"):
        export_minari(tmp_path, DATASET, data_path=tmp_path)


@pytest.mark.slow
def test_command_line(tmp_path: Path) -> None:
    shards = write_episodes(tmp_path / "episodes", 2, min_len=3, max_len=4)
    cmd = [sys.executable, "-m", "training.export_minari", "--episodes", str(tmp_path / "episodes"),
           "--dataset-id", DATASET, "--data-path", str(tmp_path / "m")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert_round_trip(load(tmp_path / "m"), shards)
