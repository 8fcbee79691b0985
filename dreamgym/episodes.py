"""The one loop that plays an episode of a Gymnasium env: reset from a seed, act, step until it ends.

Everything that plays single episodes (collecting shards, scoring controllers, recording videos and the dream
that replays them, replaying episodes to relabel them, scoring SB3 policies) runs :func:`play_episode` and
records what it needs through the policy (it sees every observation acted on) and the hooks (they see the reset
and every step's outcome). The batched population rollouts (here too) play many envs at once:
:func:`rollout_population` one episode per env of a P·E-env VectorEnv (the dream's), :func:`play_queue` any
number of episodes on a few envs that each take the next episode when theirs ends (the real game's worker
processes behind a latent VectorEnv: :func:`rollout_queue` scores with it, ``training.collect`` records with
it); ``dreamgym.tools.play`` steps one frame per window refresh, across
episodes and restarts a person asks for, so it keeps its own step.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from dreamgym.controller import ControllerConfig, population_actions
from dreamgym.envs import DreamVectorEnv

Policy = Callable[[Any], Any]
"""observation -> the action the env's ``step`` takes"""

ResetHook = Callable[[Any, dict[str, Any]], None]
"""(observation, info) of the reset"""

StepHook = Callable[[int, Any, Any, float, bool, bool, dict[str, Any]], None]
"""(t, observation after the step, action, reward, terminated, truncated, info) of step t (from 0)"""


@dataclass(frozen=True)
class EpisodeResult:
    """What one episode came to: the sum of its rewards, its steps and how it stopped."""

    total_reward: float
    steps: int
    terminated: bool
    truncated: bool


def play_episode(env: gym.Env, policy: Policy, seed: int, on_step: StepHook | None = None,
                 on_reset: ResetHook | None = None, max_steps: int | None = None) -> EpisodeResult:  # fmt: skip
    """Plays ``env`` from ``reset(seed=seed)`` with ``policy`` until the episode ends or ``max_steps`` are taken.

    ``on_reset`` sees the reset's outcome, ``on_step`` each step's (after the step, before the next action).
    """
    obs, info = env.reset(seed=int(seed))
    if on_reset is not None:
        on_reset(obs, info)
    total, steps, terminated, truncated = 0.0, 0, False, False
    while not (terminated or truncated) and (max_steps is None or steps < max_steps):
        action = policy(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        if on_step is not None:
            on_step(steps, obs, action, float(reward), bool(terminated), bool(truncated), info)
        total += float(reward)
        steps += 1
    return EpisodeResult(total, steps, bool(terminated), bool(truncated))


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@dataclass(frozen=True)
class Scores:
    """Outcome of P candidates × E episodes: returns (P, E) float64, lengths (P, E) int64, seeds (P, E)."""

    returns: np.ndarray
    lengths: np.ndarray
    seeds: np.ndarray


def episode_seeds(seed: int, candidates: int, episodes: int) -> np.ndarray:
    """(P, E) seeds: episode e of candidate p is env k = p·E + e, seeded ``seed + k``."""
    return seed + np.arange(candidates * episodes, dtype=np.int64).reshape(candidates, episodes)


COMPACT_ABOVE = 8
"""a dream VectorEnv of more envs than this drops its finished envs once they are a quarter of it"""


HOST_CHECK_EVERY = 16
"""on a device other than the CPU, :func:`rollout_population` reads which envs are done every this many steps"""


def rollout_population(envs: gym.vector.VectorEnv, config: ControllerConfig, params: torch.Tensor, episodes: int,
                       seed: int, compact_above: int | None = COMPACT_ABOVE,
                       check_every: int | None = None) -> Scores:  # fmt: skip
    """Plays every env of ``envs`` (P·E of them) to the end of its first episode.

    Env k acts with candidate ``k // E`` (params (P, n) on the policy's device). With Gymnasium's
    NEXT_STEP autoreset the step after an episode's end is a reset step, so rewards are counted only until
    an env is first done; the loop stops once every env has finished one episode.

    Returns, lengths and done flags are kept beside the env's outputs (on its device when they are tensors).
    The host reads the done flags back every ``check_every`` steps (default: every step on the CPU,
    :data:`HOST_CHECK_EVERY` elsewhere, so that a GPU runs that many steps without waiting for the host);
    steps after an env's end count for nothing, so the scores do not depend on it.

    Episode lengths are uneven (the longest is often several times the mean), so a :class:`DreamVectorEnv`
    stops computing the envs that have finished: when a check finds a quarter of its envs finished and it has
    more than ``compact_above`` envs, it is replaced by its :meth:`~DreamVectorEnv.subset` of playing envs,
    which continue exactly as they would have. The env-steps computed then stay within 4/3 x (the steps
    played) + ``compact_above`` x (the longest episode); a subset costs less than a step of its batch.
    ``compact_above=None`` never compacts; any other VectorEnv is always stepped whole.
    """
    P, n = len(params), envs.num_envs
    if n != P * episodes:
        raise ValueError(f"vector env has {n} envs, expected {P} candidates x {episodes} episodes")
    # the size above which finished envs are dropped; only a DreamVectorEnv can drop them
    limit = compact_above if isinstance(envs, DreamVectorEnv) else None
    obs, _ = envs.reset(seed=seed)
    device = obs.device if isinstance(obs, torch.Tensor) else torch.device("cpu")
    every = check_every if check_every is not None else 1 if device.type == "cpu" else HOST_CHECK_EVERY
    returns = torch.zeros(n, dtype=torch.float64, device=device)
    lengths = torch.zeros(n, dtype=torch.int64, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    rows = torch.arange(n, device=device)  # env i of ``envs`` is env rows[i] of the population
    actors, per_actor = params, episodes  # env i of ``envs`` acts with actors[i // per_actor]
    for step in itertools.count(1):
        actions = population_actions(config, actors, obs, per_actor)
        obs, reward, terminated, truncated, _ = envs.step(actions)
        playing = ~done[rows]
        returns[rows] += torch.where(playing, torch.as_tensor(reward, device=device), 0.0)
        lengths[rows] += playing
        done[rows] |= torch.as_tensor(terminated, device=device) | torch.as_tensor(truncated, device=device)
        if step % every:
            continue
        keep = (~done[rows]).nonzero().squeeze(1)  # the host waits for the device here
        if len(keep) == 0:
            break
        if limit is not None and len(rows) > limit and 4 * len(keep) <= 3 * len(rows):
            assert isinstance(envs, DreamVectorEnv)  # limit is set only for them
            envs, obs, rows = envs.subset(keep), _take_rows(obs, keep), rows[keep]
            actors, per_actor = params[(rows // episodes).to(params.device)], 1
    scores = (returns.cpu().numpy().reshape(P, episodes), lengths.cpu().numpy().reshape(P, episodes))
    return Scores(*scores, episode_seeds(seed, P, episodes))


def _take_rows(batch: Any, index: torch.Tensor) -> Any:
    """Rows ``index`` of a numpy array or a torch tensor."""
    return batch[index.to(batch.device)] if isinstance(batch, torch.Tensor) else batch[index.cpu().numpy()]


@dataclass(frozen=True)
class QueuedEpisode:
    """An episode for :func:`play_queue`: who plays it (``params`` (n,) of one controller), from which seed, and
    ``key``, the caller's name for it."""

    key: Any
    seed: int
    params: torch.Tensor


QueueStepHook = Callable[[int, Any, Any, float, bool, bool], None]
"""(env index, episode key, action, reward, terminated, truncated) of one step of a queued episode"""


def play_queue(envs: gym.vector.VectorEnv, config: ControllerConfig, next_episode: Callable[[], QueuedEpisode | None],
               on_step: QueueStepHook, on_start: Callable[[int, Any], None] | None = None
               ) -> Iterator[Any]:  # fmt: skip
    """Plays episodes on a VectorEnv of any N envs (autoreset ``DISABLED``) until ``next_episode()`` has no more,
    yielding each episode's key as it ends.

    Each env plays the episode ``next_episode()`` gives it, from its seed, with its controller; when the episode
    ends the env is reset (``options={"reset_mask": ...}``) with the next one, so the envs stay busy however
    uneven the lengths are. ``on_start(i, key)`` runs once env i has been reset for an episode, ``on_step`` after
    each of its steps. An ended episode's key is yielded before its env asks for the next episode, so the
    caller may queue more work (a retry) first. Once there is none, an env with nothing
    left replays the first episode's seed and controller, unrecorded, because a VectorEnv steps all its envs.
    The episodes are those single envs would play from the same seeds (up to the env's own batching, e.g.
    float rounding).
    """
    if envs.metadata.get("autoreset_mode") != gym.vector.AutoresetMode.DISABLED:
        raise ValueError("play_queue needs a VectorEnv made with autoreset_mode=DISABLED")
    first = next_episode()
    if first is None:
        return
    playing: list[QueuedEpisode | None] = [first, *(next_episode() for _ in range(envs.num_envs - 1))]
    # VectorEnv.reset's annotation says int, but Gymnasium's vector envs and dreamgym's take one seed per env

    def started(indices: Iterable[int]) -> None:
        for i in indices:
            episode = playing[i]
            if episode is not None and on_start is not None:
                on_start(i, episode.key)

    seeds: Any = [(e or first).seed for e in playing]
    obs, _ = envs.reset(seed=seeds)
    started(range(envs.num_envs))
    while any(e is not None for e in playing):
        actors = torch.stack([(e or first).params for e in playing])
        actions = population_actions(config, actors, obs, 1)
        obs, reward, terminated, truncated, _ = envs.step(actions)
        reward, terminated, truncated = _numpy(reward), _numpy(terminated), _numpy(truncated)
        ended = terminated.astype(bool) | truncated.astype(bool)
        for i, episode in enumerate(playing):
            if episode is not None:
                on_step(i, episode.key, actions[i], float(reward[i]), bool(terminated[i]), bool(truncated[i]))
        if not ended.any():
            continue
        restarted = [int(i) for i in np.flatnonzero(ended)]
        for episode in (playing[i] for i in restarted):
            if episode is not None:
                yield episode.key
        seeds = [None] * envs.num_envs  # None: keep its stream (see the first reset)
        for i in restarted:
            playing[i] = next_episode() if playing[i] is not None else None
            seeds[i] = (playing[i] or first).seed
        if any(e is not None for e in playing):
            obs, _ = envs.reset(seed=seeds, options={"reset_mask": ended})  # the other rows are unchanged
            started(restarted)


def rollout_queue(envs: gym.vector.VectorEnv, config: ControllerConfig, params: torch.Tensor, episodes: int,
                  seed: int) -> Scores:  # fmt: skip
    """Plays P·E episodes on a VectorEnv of any N envs (autoreset ``DISABLED``, :func:`play_queue`): episode k
    (candidate k // E, seed ``seed + k``, as in :func:`rollout_population`) goes to the next env that is free."""
    P, total = len(params), len(params) * episodes
    returns, lengths = np.zeros(total, np.float64), np.zeros(total, np.int64)
    queue = iter(range(total))

    def next_episode() -> QueuedEpisode | None:
        k = next(queue, None)
        return None if k is None else QueuedEpisode(k, seed + k, params[k // episodes])

    def count(i: int, k: int, action: Any, reward: float, terminated: bool, truncated: bool) -> None:
        returns[k] += reward
        lengths[k] += 1

    for _ in play_queue(envs, config, next_episode, count):
        pass
    return Scores(returns.reshape(P, episodes), lengths.reshape(P, episodes), episode_seeds(seed, P, episodes))
