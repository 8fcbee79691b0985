"""dreamgym.episodes.play_episode: the one single-episode loop, its hooks and its step cap."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from dreamgym.episodes import play_episode


def test_the_policy_sees_every_state_and_the_hooks_every_outcome() -> None:
    env = gym.make("CartPole-v1")
    acted: list[np.ndarray] = []
    events: list[Any] = []

    def policy(obs: np.ndarray) -> int:
        acted.append(obs)
        return len(acted) % 2

    def on_step(t: int, obs: np.ndarray, action: int, *outcome: Any) -> None:
        events.append((t, obs, action, *outcome))

    result = play_episode(env, policy, 3, on_step=on_step, on_reset=lambda obs, info: events.append(("reset", obs)))
    assert result.terminated and not result.truncated and result.total_reward == result.steps == len(acted)
    assert events[0][0] == "reset" and np.array_equal(events[0][1], acted[0])
    steps = events[1:]
    assert [s[0] for s in steps] == list(range(result.steps))
    assert [s[2] for s in steps] == [(t + 1) % 2 for t in range(result.steps)]  # the actions the policy chose
    assert all(np.array_equal(s[1], o) for s, o in zip(steps[:-1], acted[1:], strict=True))  # after step t: state t+1
    assert steps[-1][4] is True and all(s[4] is False for s in steps[:-1])  # terminated only at the end
    again = play_episode(env, lambda obs: 0, seed=3)
    assert again == play_episode(env, lambda obs: 0, seed=3)  # a seed fixes the episode, whatever came before


def test_max_steps_stops_an_episode_early() -> None:
    result = play_episode(gym.make("CartPole-v1"), lambda obs: 0, seed=0, max_steps=3)
    assert (result.steps, result.total_reward, result.terminated, result.truncated) == (3, 3.0, False, False)
