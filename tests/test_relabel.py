"""training.relabel: the expert's labels recomputed by replaying recorded episodes from their seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dreamgym.data import ShardError, list_episodes, load_arrays, load_episode, save_arrays, update_arrays
from dreamgym.experts import TrackExpert, with_expert_settings
from dreamgym.games import CARRACING
from training.collect import CollectArgs, collect
from training.relabel import RelabelArgs, relabel, replay_labels


@pytest.fixture(scope="module")
def expert_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 80-step CarRacing episodes of the road follower, labelled by the expert while they were played."""
    out = tmp_path_factory.mktemp("relabel") / "episodes"
    collect(CollectArgs(game="carracing", episodes=2, workers=2, out=str(out), max_steps=80,
                        exploration="road-follower", expert_labels=True))  # fmt: skip
    return out


def test_undrawn_replay_gives_the_labels_recorded_while_playing(expert_run: Path) -> None:
    env = CARRACING.replay_game()
    for shard in list_episodes(expert_run):
        episode = load_episode(shard)
        labels = replay_labels(CARRACING, env, episode.seed, episode.actions, episode.rewards)
        assert np.array_equal(labels, episode.expert_actions)
        assert not np.array_equal(labels, episode.actions)  # the follower played, not the expert
    env.close()


def test_relabel_rewrites_episode_and_latent_shards(expert_run: Path, tmp_path: Path) -> None:
    episodes, latents = tmp_path / "episodes", tmp_path / "latents"
    truth = {}
    for shard in list_episodes(expert_run):
        arrays = load_arrays(shard, ("frames", "actions", "rewards", "terminated", "truncated", "seed", "game",
                                     "version", "expert_actions"))  # fmt: skip
        truth[shard.name] = arrays["expert_actions"]
        stale = np.zeros_like(arrays["expert_actions"])  # as if labelled by another expert
        save_arrays(episodes / shard.name, arrays | {"expert_actions": stale})
        save_arrays(latents / shard.name, {"mu": np.ones((len(stale), 4), np.float32), "expert_actions": stale})
    summary = relabel(RelabelArgs(game="carracing", episodes=str(episodes), latents=str(latents), workers=2))
    assert summary["episodes"] == 2 and summary["steps"] == sum(len(v) for v in truth.values())
    for name, labels in truth.items():
        episode = load_episode(episodes / name)
        assert np.array_equal(episode.expert_actions, labels)
        assert np.array_equal(episode.frames, load_episode(expert_run / name).frames)  # the rest is kept
        latent = load_arrays(latents / name, ("mu", "expert_actions"))
        assert np.array_equal(latent["expert_actions"], labels) and (latent["mu"] == 1).all()


def test_relabel_with_expert_settings_gives_that_experts_labels(expert_run: Path, tmp_path: Path) -> None:
    settings = '{"gain": 0.5, "damping": 0.0}'
    expert = with_expert_settings(CARRACING, settings).expert
    assert expert == TrackExpert(gain=0.5, damping=0.0)
    episodes = tmp_path / "episodes"
    episodes.mkdir()
    for shard in list_episodes(expert_run):
        (episodes / shard.name).write_bytes(shard.read_bytes())
    relabel(RelabelArgs(game="carracing", episodes=str(episodes), workers=1, expert=settings))
    env = CARRACING.replay_game()
    for shard in list_episodes(episodes):
        episode = load_episode(shard)
        env.reset(seed=episode.seed)
        expected = []
        for action in episode.actions:
            expected.append(expert(env))
            env.step(action)
        assert np.array_equal(episode.expert_actions, np.asarray(expected))
        assert not np.array_equal(episode.expert_actions, load_episode(expert_run / shard.name).expert_actions)
    env.close()


def test_an_episode_that_does_not_replay_is_an_error_naming_it(expert_run: Path, tmp_path: Path) -> None:
    shard = list_episodes(expert_run)[0]
    target = tmp_path / "episodes" / shard.name
    target.parent.mkdir()
    target.write_bytes(shard.read_bytes())
    rewards = load_arrays(target, ("rewards",))["rewards"]
    update_arrays(target, {"rewards": rewards + np.float32(1.0)})  # not what this seed and these actions give
    with pytest.raises(ShardError, match=f"{shard.name}: does not replay from its seed"):
        relabel(RelabelArgs(game="carracing", episodes=str(target.parent), workers=1))
    with pytest.raises(FileNotFoundError, match="lacks 1 of the episodes' latent shards"):
        relabel(RelabelArgs(game="carracing", episodes=str(target.parent), latents=str(tmp_path / "none"), workers=1))
    with pytest.raises(ValueError, match="has no scripted expert"):
        relabel(RelabelArgs(game="takecover", episodes=str(target.parent), workers=1))
