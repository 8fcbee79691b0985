"""Export collected episode shards as a Minari dataset, for offline-RL tools that read Minari.

    from dreamgym.minari_export import export_minari
    export_minari("data/takecover", "dreamgym/takecover/random-v0", data_path="minari_datasets")

    import minari                     # with MINARI_DATASETS_PATH=minari_datasets
    dataset = minari.load_dataset("dreamgym/takecover/random-v0")

Each shard (``dreamgym.data``) becomes one Minari episode, in shard order (Minari ids 0, 1, ...): its
(T, 64, 64, 3) uint8 frames, the controller's actions (``GameSpec.action_space``; ``GameSpec.to_game_action``
gives the raw game's action), rewards, terminations and truncations, with the shard's seed as the episode's
``seed`` and the shard's file name as its ``shard`` metadata (``dataset.storage.get_episode_metadata``); a
shard's expert labels, if any, go to ``infos["expert_actions"]``. Minari stores T + 1 observations (and infos)
per episode, the last for the state after the final step; shards do not record that frame, so the last frame
(and label) is repeated in its place. The env spec is the real game's Gymnasium id capped at the game's step
limit, while the observation space is the 64x64x3 frames actually stored. Frames are stored losslessly unless
``jpeg_encoding`` (Minari's lossy JPEG, much smaller). Needs the ``minari`` extra: ``pip install dreamgym[minari]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from dreamgym.data import list_episodes, load_arrays, load_episode
from dreamgym.games import FRAME_SHAPE, GameSpec, get_game

OBSERVATION_SPACE = gym.spaces.Box(0, 255, FRAME_SHAPE, np.uint8)


class MinariExportError(ValueError):
    """The episodes or the dataset id cannot be exported (no shards, mixed games, dataset exists, ...)."""


def require_minari() -> Any:
    """The ``minari`` module (with its HDF5 backend), or an ImportError naming the extra to install."""
    try:
        import h5py  # noqa: F401  (Minari's default storage format)
        import minari
    except ImportError as err:
        raise ImportError(
            f"exporting to Minari needs the 'minari' extra: pip install 'dreamgym[minari]' ({err})"
        ) from err
    return minari


@contextlib.contextmanager
def datasets_path(path: str | os.PathLike | None) -> Iterator[None]:
    """Points Minari at ``path`` (``MINARI_DATASETS_PATH``) inside the block; None: leave it as it is."""
    if path is None:
        yield
        return
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(Path(path).absolute())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


class _SpecOnlyEnv(gym.Env):
    """Carries the real game's env spec and the stored spaces to Minari without starting the game."""

    def __init__(self, spec: gym.envs.registration.EnvSpec, action_space: gym.spaces.Space) -> None:
        self.spec = spec
        self.observation_space = OBSERVATION_SPACE
        self.action_space = action_space


def game_env_spec(spec: GameSpec) -> gym.envs.registration.EnvSpec:
    """The real game's registered Gymnasium spec, capped at the game's step limit."""
    try:
        if spec.env_id.startswith("Vizdoom"):
            import vizdoom.gymnasium_wrapper  # noqa: F401  (registers the Vizdoom ids)
        env_spec = gym.spec(spec.env_id)
    except (ImportError, gym.error.Error) as err:
        raise MinariExportError(f"{spec.env_id} is not registered ({err}): pip install {spec.package}") from err
    return dataclasses.replace(env_spec, max_episode_steps=spec.max_episode_steps)


def _description(spec: GameSpec, episodes_dir: Path) -> str:
    return (
        f"dreamgym episodes of {spec.env_id} collected by training.collect ({episodes_dir.name}). Observations: the "
        "game's pixels as 64x64x3 uint8 frames (dreamgym GameSpec.to_frame); the last observation of each episode "
        "repeats its last frame (the frame after the final step is not recorded). Actions: the controller's "
        f"({spec.action_space}); dreamgym.games.get_game({spec.name!r}).to_game_action maps them to the game's own. "
        "Each episode's seed replays it in the real game."
    )


def _check_inputs(episodes_dir: Path, dataset_id: str, minari: Any) -> tuple[list[Path], GameSpec]:
    if not episodes_dir.is_dir():
        raise MinariExportError(f"episodes folder {episodes_dir} does not exist")
    shards = list_episodes(episodes_dir)
    if not shards:
        raise MinariExportError(f"no episode shards (episode_*.npz) in {episodes_dir}")
    try:
        minari.dataset.minari_dataset.parse_dataset_id(dataset_id)
    except (ValueError, TypeError) as err:
        raise MinariExportError(
            f"malformed dataset id {dataset_id!r}: expected (namespace/)name-v<version>, e.g. "
            "dreamgym/takecover/random-v0"
        ) from err
    games = {str(load_arrays(shard, ("game",))["game"]) for shard in shards}
    if len(games) > 1:
        raise MinariExportError(f"{episodes_dir} mixes games {sorted(games)}: export one game per dataset")
    try:
        return shards, get_game(games.pop())
    except KeyError as err:
        raise MinariExportError(str(err)) from err


def export_minari(
    episodes_dir: str | os.PathLike,
    dataset_id: str,
    data_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    jpeg_encoding: bool = False,
    author: str | None = None,
    author_email: str | None = None,
    code_permalink: str | None = None,
    description: str | None = None,
) -> Path:
    """Writes every shard of ``episodes_dir`` into the Minari dataset ``dataset_id``; returns its folder.

    ``data_path``: Minari's datasets root (default ``MINARI_DATASETS_PATH``, else ``~/.minari/datasets``). An
    existing dataset of that id raises :class:`MinariExportError` unless ``overwrite``; shards are streamed one at
    a time, and a failed export removes its partial dataset.
    """
    minari = require_minari()
    episodes_dir = Path(episodes_dir)
    with datasets_path(data_path):
        shards, spec = _check_inputs(episodes_dir, dataset_id, minari)
        from minari.storage.datasets_root_dir import get_dataset_path

        folder = Path(get_dataset_path(dataset_id))
        if folder.exists():
            if not overwrite:
                raise MinariExportError(f"Minari dataset {dataset_id} already exists at {folder} (pass overwrite)")
            if not (folder / "data" / "metadata.json").is_file():
                raise MinariExportError(f"{folder} exists and is not a Minari dataset: not overwriting it")
            minari.delete_dataset(dataset_id)
        try:
            dataset = _write(minari, shards, spec, episodes_dir, dataset_id, jpeg_encoding,
                             dict(author=author, author_email=author_email, code_permalink=code_permalink,
                                  description=description or _description(spec, episodes_dir)))  # fmt: skip
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return Path(dataset.storage.data_path).parent


def _pad(steps: np.ndarray) -> np.ndarray:
    """(T, ...) per-state values -> (T + 1, ...), the last repeated for the state after the final step."""
    return np.concatenate([steps, steps[-1:]])


def _write(minari: Any, shards: list[Path], spec: GameSpec, episodes_dir: Path, dataset_id: str,
           jpeg_encoding: bool, metadata: dict[str, Any]) -> Any:  # fmt: skip
    env = _SpecOnlyEnv(game_env_spec(spec), spec.action_space)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`\w+` is set to None", category=UserWarning)
        dataset = minari.create_dataset_from_buffers(
            dataset_id, [], env=env, observation_space=OBSERVATION_SPACE, action_space=spec.action_space,
            algorithm_name=f"dreamgym training.collect ({spec.name})", requirements=[spec.package],
            jpeg_encoding=jpeg_encoding, **metadata,
        )  # fmt: skip
    for shard in shards:
        episode = load_episode(shard)
        dataset.update_dataset_from_buffer([
            minari.data_collector.EpisodeBuffer(
                seed=episode.seed,
                observations=_pad(episode.frames),
                actions=np.asarray(episode.actions, dtype=spec.action_space.dtype),
                rewards=episode.rewards,
                terminations=episode.terminated,
                truncations=episode.truncated,
                infos={} if episode.expert_actions is None else {"expert_actions": _pad(episode.expert_actions)},
            )
        ])  # fmt: skip
    dataset.storage.update_episode_metadata([{"shard": shard.name} for shard in shards])
    return dataset
