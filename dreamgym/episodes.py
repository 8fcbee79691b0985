"""The one loop that plays an episode of a Gymnasium env: reset from a seed, act, step until it ends.

Everything that plays single episodes (collecting shards, scoring controllers, recording videos and the dream
that replays them, replaying episodes to relabel them, scoring SB3 policies) runs :func:`play_episode` and
records what it needs through the policy (it sees every observation acted on) and the hooks (they see the reset
and every step's outcome). The batched population rollout (``agents.rollout.rollout_population``) plays many
envs at once and is the one other loop; ``dreamgym.tools.play`` steps one frame per window refresh, across
episodes and restarts a person asks for, so it keeps its own step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

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
