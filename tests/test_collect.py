"""Collection: reproducible episodes, minimum-length re-draws, parallel runs, and resume after SIGKILL."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import process_alive

import training.collect as collect_module
from dreamgym.controller import Controller, ControllerConfig
from dreamgym.data import episode_path, list_episodes, load_episode
from dreamgym.envs.latent import make_latent_env
from dreamgym.games import CARRACING, FRAME_SHAPE, MissingGameError, get_game, road_mask
from dreamgym.locks import LOCK_FILE
from training.collect import CollectArgs, collect, collect_episode, episode_seed, exploring_spec, record_episode

# The parallel run that the interrupted one must reproduce: CarRacing, short episodes, 2 workers.
RUN = CollectArgs(game="carracing", episodes=6, workers=2, seed=5, max_steps=30)


def test_episode_seed_is_deterministic_and_distinct() -> None:
    seeds = {(b, i, a): episode_seed(b, i, a) for b in range(3) for i in range(20) for a in range(3)}
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= s < 2**32 for s in seeds.values())
    assert episode_seed(1, 2, 0) == seeds[(1, 2, 0)]


@pytest.mark.parametrize(("game", "max_steps"), [("takecover", 60), ("carracing", 30)])
def test_episode_is_reproducible_from_its_recorded_seed(real_env, game: str, max_steps: int) -> None:
    spec, env = real_env(game, max_steps)
    episode = record_episode(spec, env, seed=episode_seed(0, 1, 0))
    record_episode(spec, env, seed=123)  # the env's state in between must not matter
    _, fresh_env = real_env(game, max_steps)
    replay = record_episode(spec, fresh_env, episode.seed)
    assert episode.frames.shape == (len(episode), *FRAME_SHAPE) and episode.frames.dtype == np.uint8
    assert 0 < len(episode) <= max_steps and episode.game == game
    done = episode.terminated | episode.truncated
    assert done[-1] and not done[:-1].any()
    for name in ("frames", "actions", "rewards", "terminated", "truncated"):
        assert np.array_equal(getattr(replay, name), getattr(episode, name)), name
    other = record_episode(spec, env, seed=episode_seed(0, 2, 0))
    assert not np.array_equal(other.frames[-1], episode.frames[-1])


class _SeedLengthEnv(gym.Env):
    """Blank frames; an episode reset with seed s lasts 1 + s % 10 steps."""

    observation_space = gym.spaces.Box(0, 255, FRAME_SHAPE, np.uint8)
    action_space = CARRACING.action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.left = 1 + seed % 10
        return np.zeros(FRAME_SHAPE, np.uint8), {}

    def step(self, action):
        self.left -= 1
        return np.zeros(FRAME_SHAPE, np.uint8), 0.0, self.left == 0, False, {}


def test_collect_episode_redraws_attempts_shorter_than_the_minimum() -> None:
    spec = dataclasses.replace(CARRACING, to_frame=lambda obs: obs)
    env = _SeedLengthEnv()
    redrawn = 0
    for index in range(20):
        episode = collect_episode(spec, env, base_seed=3, index=index, min_steps=8)
        lengths = [1 + episode_seed(3, index, a) % 10 for a in range(50)]
        first_long = next(a for a, n in enumerate(lengths) if n >= 8)
        assert episode.seed == episode_seed(3, index, first_long)
        assert len(episode) == lengths[first_long] >= 8
        redrawn += first_long > 0
    assert redrawn > 0  # the check above really exercised re-draws


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """An uninterrupted in-process run of ``RUN``: (shard folder, returned statistics)."""
    out = tmp_path_factory.mktemp("reference")
    return out, collect(dataclasses.replace(RUN, out=str(out)))


def test_collect_with_two_workers_writes_every_episode(reference_run, real_env) -> None:
    out, stats = reference_run
    assert stats["episodes_collected"] == stats["total_episodes"] == RUN.episodes
    assert stats["steps"] == RUN.episodes * RUN.max_steps
    paths = list_episodes(out)
    assert [p.name for p in paths] == [f"episode_{i:06d}.npz" for i in range(RUN.episodes)]
    assert not [p for p in out.iterdir() if p not in paths and p.name != LOCK_FILE]  # no temporary files left
    episodes = [load_episode(p) for p in paths]
    for index, episode in enumerate(episodes):
        assert len(episode) == RUN.max_steps and episode.truncated[-1]
        assert episode.game == "carracing" and episode.seed == episode_seed(RUN.seed, index, 0)
        assert episode.actions.shape == (RUN.max_steps, 3) and episode.actions.dtype == np.float32
        assert all(CARRACING.action_space.contains(a) for a in episode.actions)
    assert len({e.frames[-1].tobytes() for e in episodes}) == RUN.episodes  # each episode its own track
    spec, env = real_env("carracing", RUN.max_steps)
    assert np.array_equal(record_episode(spec, env, episodes[3].seed).frames, episodes[3].frames)


def test_rerun_of_a_finished_folder_changes_nothing(reference_run) -> None:
    out, _ = reference_run
    before = {p.name: p.read_bytes() for p in list_episodes(out)}
    stats = collect(dataclasses.replace(RUN, out=str(out)))
    assert stats["episodes_collected"] == 0 and stats["total_episodes"] == RUN.episodes
    assert {p.name: p.read_bytes() for p in list_episodes(out)} == before


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids.update(int(k) for k in (task / "children").read_text().split())
    return kids


def _assert_same_arrays(a: Path, b: Path) -> None:
    with np.load(a) as x, np.load(b) as y:
        assert sorted(x.files) == sorted(y.files), a.name
        for key in x.files:
            assert x[key].dtype == y[key].dtype and x[key].shape == y[key].shape, (a.name, key)
            assert x[key].tobytes() == y[key].tobytes(), (a.name, key)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads worker processes from /proc")
def test_sigkilled_run_resumes_to_the_same_shards(reference_run, tmp_path: Path, script_env, run_module) -> None:
    out = tmp_path / "episodes"
    flags = {"game": RUN.game, "episodes": RUN.episodes, "workers": RUN.workers, "seed": RUN.seed}
    argv = [f"--{k}={v}" for k, v in {**flags, "max-steps": RUN.max_steps, "out": out}.items()]
    log = tmp_path / "killed.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "training.collect", *argv],
            cwd=tmp_path,
            env=script_env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + 90
    while not list_episodes(out):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"collector wrote no shard (exit {proc.poll()}):\n{log.read_text()}")
        time.sleep(0.005)
    workers = _children(proc.pid)
    assert len(workers) >= RUN.workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    while any(process_alive(w) for w in workers):  # the workers die with the collector, so nothing writes on
        assert time.monotonic() < deadline, "workers outlived the killed collector"
        time.sleep(0.01)

    partial = {p.name: p.stat().st_mtime_ns for p in list_episodes(out)}
    assert 0 < len(partial) < RUN.episodes, "the run was not killed mid-way; make its episodes longer"
    for name in partial:
        load_episode(out / name)  # what has a final name is complete
    stale = out / ".episode_000099.npz.abc123.tmp"  # as left by a kill during a write
    stale.write_bytes(b"half a shard")

    stats = json.loads(run_module("training.collect", *argv).stdout)
    assert stats["episodes_collected"] == RUN.episodes - len(partial)
    assert stats["total_episodes"] == RUN.episodes
    assert not stale.exists()
    assert {p.name: p.stat().st_mtime_ns for p in list_episodes(out) if p.name in partial} == partial  # kept

    reference, _ = reference_run
    assert [p.name for p in list_episodes(out)] == [p.name for p in list_episodes(reference)]
    for path in list_episodes(reference):
        _assert_same_arrays(path, out / path.name)


@pytest.mark.parametrize(("max_steps", "min_steps"), [(None, 8), (5, 5)])
def test_worker_redraws_below_the_games_minimum_capped_by_max_steps(
    monkeypatch, tmp_path: Path, max_steps: int | None, min_steps: int
) -> None:
    """A worker keeps the first attempt of at least min(spec.min_episode_steps, --max-steps) steps.

    (Real TakeCover episodes under the random policy rarely die before its 100-step minimum, so a fake
    game with seed-dependent lengths makes the re-draws certain.)
    """
    spec = dataclasses.replace(CARRACING, min_episode_steps=8, to_frame=lambda obs: obs)
    args = CollectArgs(seed=3, max_steps=max_steps, out=str(tmp_path))
    monkeypatch.setattr(collect_module, "_worker", {"spec": spec, "args": args, "env": _SeedLengthEnv()})
    for index in range(10):
        _, steps, _ = collect_module._collect_one(index)
        episode = load_episode(episode_path(tmp_path, index))
        first_long = next(a for a in range(50) if 1 + episode_seed(3, index, a) % 10 >= min_steps)
        assert episode.seed == episode_seed(3, index, first_long) and len(episode) == steps >= min_steps


def test_missing_game_fails_before_any_work(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "vizdoom.gymnasium_wrapper", None)
    out = tmp_path / "episodes"
    with pytest.raises(MissingGameError, match="pip install vizdoom"):
        collect(CollectArgs(game="takecover", episodes=2, out=str(out)))
    assert not out.exists()


def longest_hold(policy, steps: int = 3000) -> int:
    actions = np.array([policy(np.zeros((64, 64, 3), np.uint8)) for _ in range(steps)])
    changes = np.flatnonzero(np.diff(actions) != 0)
    return int(np.diff(np.concatenate([[-1], changes, [steps - 1]])).max())


def test_takecover_long_holds_exploration_reaches_the_walls_and_is_selectable() -> None:
    spec = get_game("takecover")
    assert longest_hold(spec.exploration(np.random.default_rng(0))) < 60
    assert longest_hold(spec.explorations["long-holds"](np.random.default_rng(0))) >= 150
    chosen = exploring_spec(CollectArgs(game="takecover", exploration="long-holds"))
    assert chosen.exploration is spec.explorations["long-holds"] and chosen.name == "takecover"
    with pytest.raises(ValueError, match="--exploration 'wander': game 'takecover' has \\['long-holds'\\]"):
        exploring_spec(CollectArgs(game="takecover", exploration="wander"))


def test_controller_collection_plays_the_perturbed_controller_through_the_world_model(
    tmp_path: Path, tiny_bundle, monkeypatch
) -> None:
    """--controller: every shard is the controller (its parameters perturbed per episode) playing the real
    game seen through the bundle, reproducible from the recorded seed; with no noise its actions are the
    controller's own on the latent observations."""
    monkeypatch.chdir(tmp_path)  # ViZDoom writes _vizdoom.ini into the working folder
    bundle = tiny_bundle("takecover")
    env = make_latent_env("takecover", bundle, obs_mode="zch", max_episode_steps=40)
    config = ControllerConfig.for_env(env, "dreamgym/TakeCoverLatent-v0")
    params = np.random.default_rng(0).normal(0, 1.0, config.n_params).astype(np.float32)
    Controller(config, params).save(tmp_path / "c")
    args = CollectArgs(game="takecover", episodes=3, workers=2, out=str(tmp_path / "eps"), max_steps=40,
                       controller=str(tmp_path / "c"), world_model=str(bundle), obs_mode="zch")  # fmt: skip
    collect(args)
    episodes = [load_episode(p) for p in list_episodes(tmp_path / "eps")]
    assert len(episodes) == 3 and all(e.frames.shape[1:] == FRAME_SHAPE and len(e) >= 1 for e in episodes)
    spec, player, make_policy = collect_module.make_player(args)
    replay = record_episode(spec, player, episodes[1].seed, make_policy)
    assert np.array_equal(replay.frames, episodes[1].frames) and np.array_equal(replay.actions, episodes[1].actions)
    player.close()

    _, player, exact = collect_module.make_player(dataclasses.replace(args, param_noise=0.0))
    played = record_episode(spec, player, 7, exact)
    player.close()
    obs, _ = env.reset(seed=7)
    controller = Controller(config, params)
    for action in played.actions:
        assert action == controller.act(obs)
        obs, *_ = env.step(action)
    env.close()
    for bad, message in (
        ({"exploration": "long-holds"}, "--exploration and --controller are two different policies"),
        ({"param_noise": -1.0}, "--param-noise must be a finite std >= 0"),
        ({"obs_mode": "zh"}, "does not fit this env"),
    ):
        with pytest.raises(ValueError, match=message):
            collect(dataclasses.replace(args, out=str(tmp_path / "bad"), **bad))
    assert not (tmp_path / "bad").exists()


def road_frame(left: int, right: int) -> np.ndarray:
    """A synthetic 64x64 CarRacing frame: green grass with a vertical grey road over columns [left, right)."""
    frame = np.empty((64, 64, 3), np.uint8)
    frame[:] = (100, 202, 100)
    frame[:, left:right] = (102, 102, 102)
    return frame


def test_carracing_road_follower_steers_toward_the_road_and_keeps_moving() -> None:
    """The default CarRacing data comes mostly from a noisy follower of the road (random driving leaves the
    track at once); it steers toward the road's side, always gives gas and never brakes."""
    follower = get_game("carracing").explorations["road-follower"]
    for seed in range(5):
        for (left, right), sign in [((44, 56), 1.0), ((8, 20), -1.0)]:
            policy = follower(np.random.default_rng(seed))
            actions = np.array([policy(road_frame(left, right)) for _ in range(40)])
            assert sign * actions[10:, 0].mean() > 0.3
            assert (actions[:, 1] > 0).all() and (actions[:, 2] == 0).all()
    assert road_mask(road_frame(44, 56))[:, 44:56].all() and not road_mask(road_frame(44, 56))[:, :44].any()


def test_carracing_steady_follower_never_leaves_the_road_on_purpose() -> None:
    """The steady follower (demonstrations for agents.imitate) has no excursions: on a straight road ahead it
    keeps steering toward it for a whole episode, at a low throttle."""
    follower = get_game("carracing").explorations["steady-follower"]
    for seed in range(20):
        policy = follower(np.random.default_rng(seed))
        actions = np.array([policy(road_frame(44, 56)) for _ in range(1000)])
        assert actions[20:, 0].min() > 0.2  # an excursion would steer away for 10-60 frames
        assert 0.03 <= actions[:, 1].min() and actions[:, 1].max() <= 0.18 and (actions[:, 2] == 0).all()


def test_carracing_default_exploration_mixes_road_following_and_random_linear_episodes() -> None:
    """A random linear controller answers one frame with one action; the follower's throttle is noisy."""
    explore, frame = get_game("carracing").exploration, road_frame(24, 40)
    policies = [explore(np.random.default_rng(seed)) for seed in range(100)]
    followers = sum(not np.array_equal(policy(frame), policy(frame)) for policy in policies)
    assert 55 <= followers <= 85  # 70 % expected


def test_carracing_expert_drives_the_track_and_labels_what_it_would_do(tmp_path: Path, tiny_bundle) -> None:
    """--exploration expert plays the track expert (gas 0.3 or none, no brake), with --action-noise
    on top of its actions, and --expert-labels records its clean action in every state, whoever plays."""
    args = CollectArgs(game="carracing", episodes=2, workers=2, out=str(tmp_path / "eps"), max_steps=60,
                       exploration="expert", expert_labels=True)  # fmt: skip
    collect(args)
    for episode in (load_episode(p) for p in list_episodes(tmp_path / "eps")):
        assert np.array_equal(episode.actions, episode.expert_actions)
        assert np.isin(episode.actions[:, 1], np.float32([0, 0.3])).all()
        assert (episode.actions[:, 2] == 0).all()
        assert episode.rewards.sum() > 0  # it reached road tiles
    spec, env, noisy = collect_module.make_player(dataclasses.replace(args, action_noise=0.3))
    played = record_episode(spec, env, 3, noisy, expert_labels=True)
    assert not np.allclose(played.actions, played.expert_actions)
    assert CARRACING.action_space.contains(played.actions[0])
    assert np.isin(played.expert_actions[:, 1], np.float32([0, 0.3])).all()
    again = record_episode(spec, env, 3, noisy, expert_labels=True)
    assert np.array_equal(again.actions, played.actions) and np.array_equal(again.expert_actions, played.expert_actions)
    env.close()

    latent = make_latent_env("carracing", tiny_bundle("carracing"), obs_mode="zh", max_episode_steps=20)
    config = ControllerConfig.for_env(latent, "dreamgym/CarRacingLatent-v0")
    controller = Controller(config, np.zeros(config.n_params, np.float32))
    through_m = record_episode(CARRACING, latent, 0, lambda rng: controller.act, expert_labels=True)
    assert through_m.expert_actions.shape == through_m.actions.shape == (20, 3)
    assert not np.allclose(through_m.actions, through_m.expert_actions)
    for share in (0.0, 0.5, 1.0):  # --expert-share: the expert plays that share of the controller's steps
        mixed = collect_module.expert_mixture(CARRACING, latent, lambda rng: controller.act, share)
        episode = record_episode(CARRACING, latent, 0, mixed, expert_labels=True)
        by_expert = np.all(episode.actions == episode.expert_actions, axis=1)
        assert by_expert.mean() == share if share in (0.0, 1.0) else 0.2 < by_expert.mean() < 0.8
    latent.close()


def test_carracing_expert_laps_the_track_at_more_than_900() -> None:
    """The expert is the ceiling of the clones imitating it: whole laps, fast, on the first test seeds (the
    physics without drawing, which gives the drawn game's returns: test_relabel)."""
    env = CARRACING.replay_game()
    for seed in (1_000_000, 1_000_001, 1_000_002):
        env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(CARRACING.expert(env))
            total, done = total + float(reward), terminated or truncated
        assert total > 900, (seed, total)
    env.close()


def test_expert_options_are_checked_before_any_work(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for bad, message in (
        (CollectArgs(game="takecover", expert_labels=True), "game 'takecover' has no scripted expert"),
        (CollectArgs(game="takecover", exploration="expert"), "game 'takecover' has no scripted expert"),
        (CollectArgs(game="carracing", exploration="expert", action_noise=-0.1), "--action-noise must be"),
        (CollectArgs(game="carracing", exploration="expert", expert_share=0.5), "goes with --controller"),
        (CollectArgs(game="carracing", expert="{}x", expert_labels=True), "are not JSON"),
        (CollectArgs(game="carracing", expert="[1]", expert_labels=True), "must be a JSON object"),
        (CollectArgs(game="carracing", expert='{"speed": 1}', expert_labels=True), "has no setting 'speed'"),
        (CollectArgs(game="carracing", expert='{"gain": "1"}', expert_labels=True), "'gain' must be a float"),
        (CollectArgs(game="carracing", expert='{"braking_plan": 1}', expert_labels=True), "must be a bool"),
        (CollectArgs(game="carracing", expert='{"gain": 1}'), "--expert sets the expert's settings"),
        (CollectArgs(game="takecover", expert='{"gain": 1}', expert_labels=True), "no expert with settings"),
    ):
        with pytest.raises(ValueError, match=message):
            collect(dataclasses.replace(bad, out=str(tmp_path / "bad")))
    assert not (tmp_path / "bad").exists()


def test_the_vector_backend_records_the_pools_shards(tmp_path: Path, tiny_bundle, monkeypatch) -> None:
    """--backend vector: the controller's episodes played on a latent VectorEnv (V, M and the controller batched
    in this process) are the shards the worker pool writes, and a rerun fills in only what is missing."""
    monkeypatch.chdir(tmp_path)  # ViZDoom writes _vizdoom.ini into the working folder
    bundle = tiny_bundle("takecover")
    env = make_latent_env("takecover", bundle, obs_mode="zch", max_episode_steps=40)
    config = ControllerConfig.for_env(env, "dreamgym/TakeCoverLatent-v0")
    env.close()
    params = np.random.default_rng(1).normal(0, 1.0, config.n_params).astype(np.float32)
    Controller(config, params).save(tmp_path / "c")
    pool = CollectArgs(game="takecover", episodes=5, workers=2, out=str(tmp_path / "pool"), max_steps=40,
                       controller=str(tmp_path / "c"), world_model=str(bundle), obs_mode="zch",
                       param_noise=0.5)  # fmt: skip
    vector = dataclasses.replace(pool, backend="vector", workers=3, device="cpu", out=str(tmp_path / "vector"))
    collect(pool)
    collect(dataclasses.replace(vector, episodes=2))
    stats = collect(vector)  # resumes: 3 more episodes
    assert stats["episodes_collected"] == 3 and stats["total_episodes"] == 5
    shards = {name: [load_episode(p) for p in list_episodes(tmp_path / name)] for name in ("pool", "vector")}
    assert len({e.actions.tobytes() for e in shards["pool"]}) > 1  # the perturbations differ per episode
    for a, b in zip(shards["pool"], shards["vector"], strict=True):
        assert a.seed == b.seed and a.game == b.game and b.expert_actions is None
        for name in ("frames", "actions", "rewards", "terminated", "truncated"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and np.array_equal(x, y), name
    for bad, message in (
        ({"controller": None}, "needs --controller"),
        ({"ray_address": "auto"}, "does not go with --ray-address"),
        ({"backend": "ray"}, "--backend must be pool or vector"),
    ):
        with pytest.raises(ValueError, match=message):
            collect(dataclasses.replace(vector, out=str(tmp_path / "bad"), **bad))
