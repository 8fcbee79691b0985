"""A user's own game, defined outside dreamgym: a square the player pushes left or right on a 64x64 screen.

tests/test_own_game.py runs it through every stage by its import path, ``--game tiny_game:TINY``, as the README's
"Adding a game" does with Pong: importing this module registers the game and its ids.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from dreamgym.envs.registration import register_game_envs
from dreamgym.games import GameSpec, register_game

SIZE, SQUARE, SPEED = 64, 8, 4


class SquareEnv(gym.Env[np.ndarray, int]):
    """Action 0 moves the square left, 1 right; reward 1 a step; the episode ends when it touches an edge."""

    observation_space = gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.x = int(self.np_random.integers(SPEED, SIZE - SQUARE - SPEED))
        return self.frame(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.x = int(np.clip(self.x + (SPEED if action else -SPEED), 0, SIZE - SQUARE))
        return self.frame(), 1.0, self.x in (0, SIZE - SQUARE), False, {}

    def frame(self) -> np.ndarray:
        pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
        pixels[SIZE // 2 - SQUARE // 2 : SIZE // 2 + SQUARE // 2, self.x : self.x + SQUARE] = 255
        return pixels


TINY = register_game(GameSpec(
    name="tiny", env_id="TinySquare-v0", title="TinySquare",
    action_space=gym.spaces.Discrete(2), action_dim=2, z_size=4, hidden_size=8,
    reward_mode="survival", max_episode_steps=30, min_episode_steps=0, restart_flag=True,
    package="(none: tests/tiny_game.py)", make_game=lambda **kwargs: SquareEnv(),
    to_frame=lambda obs: obs, to_game_action=int,
    encode_action=lambda a: torch.nn.functional.one_hot(a.long().reshape(-1), 2).float(),
    squash_action=lambda x: np.argmax(x, axis=-1), controller_outputs=2,
    exploration=lambda rng: (lambda obs: int(rng.integers(2))),
))  # fmt: skip
register_game_envs(TINY)  # dreamgym/TinySquareDream-v0, dreamgym/TinySquareLatent-v0

UNREGISTERED = dataclasses.replace(TINY, name="unregistered", title="TinyUnregistered")
"""a spec nobody registers: ``dreamgym.games.get_game`` registers it under the import path it is asked by"""
