"""A dream env copied mid-episode (pickle, cloudpickle, deepcopy: how Ray and SubprocVecEnv ship envs) continues
bit-identically."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from typing import Any

import cloudpickle
import numpy as np
import pytest
from conftest import make_tiny_world_model

from dreamgym.envs import DreamEnv, DreamVectorEnv

COPIES: dict[str, Callable[[Any], Any]] = {
    "pickle": lambda env: pickle.loads(pickle.dumps(env)),
    "cloudpickle": lambda env: cloudpickle.loads(cloudpickle.dumps(env)),
    "deepcopy": copy.deepcopy,
}


def action(game: str, t: int, batch: int | None = None) -> Any:
    one = t % 3 if game == "takecover" else np.array([np.sin(t), 0.5, 0.1], np.float32)
    return one if batch is None else np.stack([one] * batch)


def trajectory(env: Any, game: str, steps: int, batch: int | None = None) -> list[np.ndarray]:
    out = []
    for t in range(steps):
        obs, reward, terminated, truncated, _ = env.step(action(game, t, batch))
        out.append(np.concatenate([np.ravel(obs), np.ravel(reward), np.ravel(terminated), np.ravel(truncated)]))
        if batch is None and (terminated or truncated):
            break
    return out


@pytest.mark.parametrize("how", COPIES)
@pytest.mark.parametrize("game,dropout", [("takecover", 0.0), ("carracing", 0.0), ("takecover", 0.3)])
def test_a_copied_dream_continues_bit_identically(how: str, game: str, dropout: float) -> None:
    env = DreamEnv(make_tiny_world_model(game), dropout=dropout, max_episode_steps=200)
    env.reset(seed=4)
    trajectory(env, game, 7)
    twin = COPIES[how](env)
    expected, got = trajectory(env, game, 60), trajectory(twin, game, 60)
    assert len(got) == len(expected) > 1
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


@pytest.mark.parametrize("how", COPIES)
def test_a_copied_dream_vector_env_continues_bit_identically(how: str) -> None:
    envs = DreamVectorEnv(3, make_tiny_world_model(), device="cpu", max_episode_steps=15)
    envs.reset(seed=9)
    trajectory(envs, "takecover", 5, batch=3)
    twin = COPIES[how](envs)
    expected, got = trajectory(envs, "takecover", 30, batch=3), trajectory(twin, "takecover", 30, batch=3)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
