"""A spaces-only stand-in env, shared by the controller and ensemble tests."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from dreamgym.games import get_game


class SpacesEnv(gym.Env):
    """An env that only declares spaces and metadata, standing in for dreamgym envs of any game."""

    def __init__(self, obs_dim: int, action_space: gym.spaces.Space, game: str | None = None) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = action_space
        self.metadata = {"render_modes": []} | ({"dreamgym_game": game} if game else {})


def game_env(game: str, obs_dim: int) -> SpacesEnv:
    return SpacesEnv(obs_dim, get_game(game).action_space, game)
