"""Collect rollouts of a real game into episode shards, in parallel and resumably.

    python -m training.collect --game takecover --episodes 2000 --workers 2 --out data/takecover
    python -m training.collect --game takecover --episodes 2600 --out data/takecover \
        --controller runs/takecover/controller/mean --world-model takecover       # iterative training

Episode ``i`` is played with a seed derived from ``(--seed, i, attempt)`` by the game's exploration
policy, or, with ``--controller``, by that controller seeing the real game through ``--world-model``
(``dreamgym/<Game>Latent-v0``) with its parameters perturbed per episode by ``--param-noise`` (the
paper's iterative procedure: new data where the current controller goes, so the next M is right
there); episodes shorter than the game's minimum are re-drawn with the next attempt. ``--exploration
expert`` plays the game's scripted expert instead (reading the game's internal state; ``--action-noise``
perturbs what it plays, ``--expert-share`` lets it play that share of a controller's steps), and
``--expert-labels`` records, beside whatever is played, the expert's action in every state visited:
demonstrations and DAgger labels for ``agents.imitate``. Each finished
episode is written atomically, so a run killed at any moment (even SIGKILL) is finished by rerunning the
same command: existing shards are kept, missing ones are collected, and every shard is the same as an
uninterrupted run's. ``--ray-address`` plays the episodes as Ray tasks on a cluster instead of
``--workers`` local processes (:mod:`dreamgym.ray_pool`; a task whose worker dies is retried); this process
writes their shards, the same as a local run's. With ``--controller``, ``--backend vector`` plays ``--workers``
games as one latent VectorEnv (``gymnasium.make_vec("dreamgym/<Game>Latent-v0")``): the games step in worker
processes (which also run V on a CPU), M and the controller run batched in this process (V too with ``--device
cuda``), and this process writes the shards; they are the pool's shards up to float rounding of the batches.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from dreamgym.cli_args import Count, NonNegativeFloat, Probability, parse_args
from dreamgym.controller import Controller
from dreamgym.data import Episode, episode_path, list_episodes, remove_stale_temps, save_episode
from dreamgym.envs.latent import LatentObservation, make_latent_env
from dreamgym.envs.latent_vector import LatentVectorEnv
from dreamgym.episodes import QueuedEpisode, play_episode, play_queue
from dreamgym.experts import with_expert_settings
from dreamgym.games import GameSpec, get_game
from dreamgym.locks import exit_if_busy, folder_lock
from dreamgym.processes import map_on_workers, on_worker_exit
from dreamgym.ray_pool import RayPool
from dreamgym.runs import Compute, Pooled, Seeded, set_threads


@dataclass(frozen=True)
class CollectArgs(Pooled, Compute, Seeded):
    """``--workers``: processes, each with its own game instance; ``--seed``: episode i's seed derives from
    (seed, i, attempt); ``--device`` and ``--threads``: where ``--backend vector`` runs V, M and the controller
    (pool workers run them on one CPU thread each)."""

    game: str = "takecover"
    """game: spec name (takecover, carracing), real env id, or a spec's import path package.module:SPEC"""
    episodes: Count = 100
    """total number of episodes wanted in --out"""
    ray_address: str | None = None
    """play on this Ray cluster (auto | HOST:PORT) instead of --workers local processes"""
    backend: Literal["pool", "vector"] = "pool"
    """pool: --workers processes, each a game with V and M; vector (with --controller): --workers games in one
    latent VectorEnv, M and the controller batched in this process"""
    out: str = "data/takecover"
    """folder of episode shards"""
    max_steps: Count | None = None
    """cap on episode length (default: the game's own cap)"""
    exploration: str | None = None
    """one of the game's named alternative exploration policies, or expert (the game's scripted expert)"""
    controller: str | None = None
    """play with this controller folder (written by agents.cmaes) instead of an exploration policy"""
    world_model: str | None = None
    """bundle folder or shipped name the controller sees the game through (default: the shipped one)"""
    obs_mode: str = "zch"
    """the controller's input: zch, zh or z"""
    param_noise: NonNegativeFloat = 0.1
    """std of the Gaussian added to the controller's parameters, drawn anew for every episode"""
    action_noise: NonNegativeFloat = 0.0
    """with --exploration expert: std of the Gaussian added to each of its actions (clipped to the action space)"""
    expert_share: Probability = 0.0
    """with --controller: probability that the game's expert plays a step instead (DAgger's beta mixture)"""
    expert_labels: bool = False
    """also record the game's expert's action in every state visited (the shards' expert_actions)"""
    expert: str | None = None
    """the expert's settings, a JSON object overriding its defaults (CarRacing: TrackExpert's fields, e.g.
    '{"braking_plan": true}')"""


def episode_seed(base_seed: int, index: int, attempt: int) -> int:
    """The seed that reproduces attempt ``attempt`` of episode ``index``."""
    return int(np.random.SeedSequence([base_seed, index, attempt]).generate_state(1, np.uint32)[0])


Policy = Callable[[np.ndarray], Any]
"""observation of the env played -> action in the game spec's action space"""


def exploration_policy(spec: GameSpec) -> Callable[[np.random.Generator], Policy]:
    """The spec's exploration policy, reading the raw game's observations."""

    def make(rng: np.random.Generator) -> Policy:
        act = spec.exploration(rng)
        return lambda obs: act(spec.to_frame(obs))

    return make


def perturbed_controller(controller: Controller, noise: float) -> Callable[[np.random.Generator], Policy]:
    """``controller`` with N(0, noise^2) added to its parameters, drawn per episode; reads latent observations."""

    def make(rng: np.random.Generator) -> Policy:
        return Controller(controller.config, perturbed_params(controller, noise, rng)).act

    return make


def perturbed_params(controller: Controller, noise: float, rng: np.random.Generator) -> np.ndarray:
    """The controller's parameters plus N(0, noise^2) drawn from ``rng`` (an episode's)."""
    return controller.params + rng.normal(0.0, noise, controller.params.shape).astype(np.float32)


def noisy_expert(spec: GameSpec, env: gym.Env, noise: float) -> Callable[[np.random.Generator], Policy]:
    """The spec's scripted expert playing ``env``, each action plus N(0, noise^2) clipped to the action space."""
    expert, space = require_expert(spec), spec.action_space

    def make(rng: np.random.Generator) -> Policy:
        def act(obs: Any) -> np.ndarray:
            action = expert(env)
            return np.clip(action + rng.normal(0.0, noise, action.shape), space.low, space.high).astype(np.float32)

        return act

    return make


def expert_mixture(spec: GameSpec, env: gym.Env, make_policy: Callable[[np.random.Generator], Policy],
                   share: float) -> Callable[[np.random.Generator], Policy]:  # fmt: skip
    """``make_policy``'s policy, except that each step the spec's expert plays instead with probability ``share``."""
    expert = require_expert(spec)

    def make(rng: np.random.Generator) -> Policy:
        policy = make_policy(rng)

        def act(obs: Any) -> Any:
            action = policy(obs)
            return expert(env) if rng.random() < share else action

        return act

    return make


def require_expert(spec: GameSpec) -> Callable[[gym.Env], np.ndarray]:
    if spec.expert is None:
        raise ValueError(f"game {spec.name!r} has no scripted expert (GameSpec.expert)")
    return spec.expert


def record_episode(spec: GameSpec, env: gym.Env, seed: int,
                   make_policy: Callable[[np.random.Generator], Policy] | None = None,
                   expert_labels: bool = False) -> Episode:  # fmt: skip
    """Plays one episode of ``env`` from ``seed`` and keeps it: the spec's raw real env with its exploration policy
    (default), or the game seen through a world model (:class:`LatentObservation`) with a policy of latent
    observations; with ``expert_labels`` the spec's expert's action in every state is recorded too."""
    latent = isinstance(env, LatentObservation)
    policy = (make_policy or exploration_policy(spec))(np.random.default_rng(seed))
    expert = require_expert(spec) if expert_labels else None
    frames, actions, rewards, terminated, truncated, labels = [], [], [], [], [], []

    def act(obs: Any) -> Any:  # keeps the state acted in, then the spec's action
        frames.append(env.frame if latent else spec.to_frame(obs))
        if expert is not None:
            labels.append(expert(env))
        action = policy(obs)
        actions.append(action)
        return action if latent else spec.to_game_action(action)

    def keep(t: int, obs: Any, action: Any, reward: float, term: bool, trunc: bool, info: dict[str, Any]) -> None:
        rewards.append(reward)
        terminated.append(term)
        truncated.append(trunc)

    play_episode(env, act, seed, on_step=keep)
    return Episode(
        frames=np.stack(frames),
        actions=np.asarray(actions),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminated=np.asarray(terminated),
        truncated=np.asarray(truncated),
        seed=seed,
        game=spec.name,
        expert_actions=np.asarray(labels) if expert is not None else None,
    )


def collect_episode(spec: GameSpec, env: gym.Env, base_seed: int, index: int, min_steps: int,
                    make_policy: Callable[[np.random.Generator], Policy] | None = None,
                    expert_labels: bool = False) -> Episode:  # fmt: skip
    """Episode ``index``: the first attempt at least ``min_steps`` long."""
    attempt = 0
    while True:
        episode = record_episode(spec, env, episode_seed(base_seed, index, attempt), make_policy, expert_labels)
        if len(episode) >= min_steps:
            return episode
        attempt += 1


_worker: dict = {}


def exploring_spec(args: CollectArgs) -> GameSpec:
    """The game spec whose ``exploration`` is the policy ``args`` asks for."""
    spec = with_expert_settings(get_game(args.game), args.expert)
    if args.expert and not (args.expert_labels or args.expert_share > 0 or args.exploration == "expert"):
        raise ValueError("--expert sets the expert's settings: it goes with --expert-labels, --expert-share or "
                         "--exploration expert")  # fmt: skip
    if args.exploration is not None and args.controller is not None:
        raise ValueError("--exploration and --controller are two different policies: pass one")
    if args.exploration in (None, "expert"):
        return spec
    if args.exploration not in spec.explorations:
        raise ValueError(f"--exploration {args.exploration!r}: game {spec.name!r} has {sorted(spec.explorations)}")
    return dataclasses.replace(spec, exploration=spec.explorations[args.exploration])


def make_player(args: CollectArgs, controller: Controller | None = None,
                ) -> tuple[GameSpec, gym.Env, Callable[[np.random.Generator], Policy] | None]:  # fmt: skip
    """The game spec, the env to play and the policy maker that ``args`` ask for (None: the exploration);
    ``controller``: the one loaded from ``args.controller`` already (workers on other machines get it so)."""
    spec = exploring_spec(args)
    if args.expert_labels:
        require_expert(spec)
    if not (np.isfinite(args.action_noise) and args.action_noise >= 0):
        raise ValueError(f"--action-noise must be a finite std >= 0, got {args.action_noise}")
    if not 0 <= args.expert_share <= 1 or (args.expert_share > 0 and args.controller is None):
        raise ValueError(f"--expert-share must be in [0, 1] and goes with --controller, got {args.expert_share}")
    if args.backend not in ("pool", "vector"):
        raise ValueError(f"--backend must be pool or vector, got {args.backend!r}")
    if args.backend == "vector" and (args.controller is None or args.ray_address or args.expert_share > 0
                                     or args.expert_labels):  # fmt: skip
        raise ValueError("--backend vector plays a --controller on a latent VectorEnv in this process: it needs "
                         "--controller, and does not go with --ray-address, --expert-share or --expert-labels "
                         "(the expert reads each game's state, which stays in its worker process)")  # fmt: skip
    if args.controller is None:
        env = spec.make_real_env(max_episode_steps=args.max_steps)
        return spec, env, noisy_expert(spec, env, args.action_noise) if args.exploration == "expert" else None
    if not (np.isfinite(args.param_noise) and args.param_noise >= 0):
        raise ValueError(f"--param-noise must be a finite std >= 0, got {args.param_noise}")
    env = make_latent_env(spec.name, args.world_model, obs_mode=args.obs_mode, max_episode_steps=args.max_steps)
    try:
        controller = controller or Controller.load(args.controller, env)
    except BaseException:
        env.close()
        raise
    make_policy = perturbed_controller(controller, args.param_noise)
    if args.expert_share > 0:
        make_policy = expert_mixture(spec, env, make_policy, args.expert_share)
    return spec, env, make_policy


def _init_worker(args: CollectArgs, controller: Controller | None = None) -> None:
    torch.set_num_threads(1)  # one core per worker: V and M run on every step beside the game
    spec, env, make_policy = make_player(args, controller)
    on_worker_exit(env.close)  # VizDoom's engine would outlive the worker
    _worker.update(spec=spec, args=args, env=env, make_policy=make_policy)


def _play_one(index: int) -> tuple[int, Episode, float]:
    """A job: episode ``index`` played by this worker, and the seconds it took."""
    spec, args = _worker["spec"], _worker["args"]
    min_steps = min(spec.min_episode_steps, args.max_steps or spec.max_episode_steps)
    start = time.perf_counter()
    episode = collect_episode(spec, _worker["env"], args.seed, index, min_steps, _worker.get("make_policy"),
                              args.expert_labels)  # fmt: skip
    return index, episode, time.perf_counter() - start


def _save(out: str | Path, played: tuple[int, Episode, float]) -> tuple[int, int, float]:
    index, episode, seconds = played
    save_episode(episode_path(out, index), episode)
    return index, len(episode), seconds


def _collect_one(index: int) -> tuple[int, int, float]:
    """A local worker's job: plays episode ``index`` and writes its shard (no copy of it to the parent)."""
    return _save(_worker["args"].out, _play_one(index))


def play_on_vector_env(args: CollectArgs, todo: list[int], controller: Controller
                       ) -> Iterator[tuple[int, Episode, float]]:  # fmt: skip
    """``--backend vector``: the episodes ``todo`` played by the perturbed controller on one latent VectorEnv of
    ``--workers`` games (:func:`~dreamgym.episodes.play_queue`), each (index, episode, seconds it took) as it
    ends; a too short attempt is replayed at once with the next attempt's seed, as a pool worker does."""
    spec = get_game(args.game)
    min_steps = min(spec.min_episode_steps, args.max_steps or spec.max_episode_steps)
    set_threads(args.threads)
    envs = LatentVectorEnv(min(args.workers, len(todo)), args.world_model, game=spec.name, obs_mode=args.obs_mode,
                           device=args.device, max_episode_steps=args.max_steps,
                           autoreset_mode=gym.vector.AutoresetMode.DISABLED)  # fmt: skip
    queue = collections.deque((index, 0) for index in todo)  # (episode index, attempt)
    steps: dict[tuple[int, int], list[Any]] = {}  # an episode's (frame, action, reward, terminated, truncated)s
    frames: dict[tuple[int, int], np.ndarray] = {}  # the frame each episode acts in next
    started: dict[tuple[int, int], float] = {}

    def next_episode() -> QueuedEpisode | None:
        if not queue:
            return None
        index, attempt = key = queue.popleft()
        seed = episode_seed(args.seed, index, attempt)
        params = perturbed_params(controller, args.param_noise, np.random.default_rng(seed))
        return QueuedEpisode(key, seed, torch.as_tensor(params, device=envs.device))

    def on_start(i: int, key: tuple[int, int]) -> None:
        frames[key], steps[key], started[key] = envs.frames[i].copy(), [], time.perf_counter()

    def on_step(i: int, key: tuple[int, int], action: Any, reward: float, term: bool, trunc: bool) -> None:
        steps[key].append((frames[key], action, reward, term, trunc))
        frames[key] = envs.frames[i].copy()

    try:
        for key in play_queue(envs, controller.config, next_episode, on_step, on_start):
            index, attempt = key
            played, seconds = steps.pop(key), time.perf_counter() - started.pop(key)
            del frames[key]
            if len(played) < min_steps:
                queue.appendleft((index, attempt + 1))
                continue
            columns = list(zip(*played, strict=True))
            yield index, Episode(frames=np.stack(columns[0]), actions=np.asarray(columns[1]),
                                 rewards=np.asarray(columns[2], dtype=np.float32), terminated=np.asarray(columns[3]),
                                 truncated=np.asarray(columns[4]), seed=episode_seed(args.seed, index, attempt),
                                 game=spec.name), seconds  # fmt: skip
    finally:
        envs.close()


def run_jobs(args: CollectArgs, todo: list[int], controller: Controller | None) -> Iterator[tuple[int, int, float]]:
    """(index, steps, seconds) of every episode of ``todo`` once its shard is written: by local workers, with
    ``--ray-address`` by Ray tasks, or with ``--backend vector`` by a latent VectorEnv; this process writes the
    shards of the last two."""
    initargs = (args, controller)
    if args.backend == "vector":
        assert controller is not None  # collect() checked
        for played in play_on_vector_env(args, todo, controller):
            yield _save(args.out, played)
        return
    if args.ray_address is None:
        yield from map_on_workers(_collect_one, todo, args.workers, _init_worker, initargs)
        return
    with RayPool(_play_one, args.ray_address, _init_worker, initargs, describe=lambda i: f"episode {i}") as pool:
        for _, played in pool.run(todo):
            yield _save(args.out, played)


def missing_indices(out: Path, episodes: int) -> list[int]:
    done = {int(p.stem.split("_")[1]) for p in list_episodes(out)}
    return [i for i in range(episodes) if i not in done]


def collect(args: CollectArgs) -> dict:
    """Collects every missing episode of ``args.out``; returns speed and size statistics."""
    spec, env, _ = make_player(args)  # fail fast, here, on a missing game, bundle or unfitting controller
    try:
        controller = None if args.controller is None else Controller.load(args.controller, env)
    finally:
        env.close()
    with folder_lock(args.out) as out:
        remove_stale_temps(out)
        return _collect_missing(args, spec, out, controller)


def _collect_missing(args: CollectArgs, spec: GameSpec, out: Path, controller: Controller | None = None) -> dict:
    todo = missing_indices(out, args.episodes)
    stats = {"episodes_collected": len(todo), "steps": 0, "worker_seconds": 0.0}
    start = time.perf_counter()
    if todo:
        jobs = run_jobs(args, todo, controller)
        bar = tqdm(jobs, total=args.episodes, initial=args.episodes - len(todo), desc=f"collect {spec.name}")
        for _, steps, seconds in bar:
            stats["steps"] += steps
            stats["worker_seconds"] += seconds
    stats["wall_seconds"] = time.perf_counter() - start
    if todo:
        stats["episodes_per_min_per_worker"] = 60 * len(todo) / stats["worker_seconds"]
        stats["steps_per_second"] = stats["steps"] / stats["wall_seconds"]
    shards = list_episodes(out)
    stats["total_episodes"] = len(shards)
    stats["mb_per_1k_episodes"] = sum(p.stat().st_size for p in shards) / max(1, len(shards)) * 1000 / 2**20
    return stats


def main(argv: list[str] | None = None) -> None:
    with exit_if_busy():
        stats = collect(parse_args(CollectArgs, argv, __doc__))
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
