"""Gymnasium ids for every game spec: ``dreamgym/<Title>Dream-v0`` and ``dreamgym/<Title>Latent-v0``.

``gymnasium.make(dream_id, world_model=...)`` gives a :class:`~dreamgym.envs.dream.DreamEnv`,
``gymnasium.make_vec(dream_id, num_envs=N, ...)`` the batched
:class:`~dreamgym.envs.dream_vector.DreamVectorEnv` (through ``vector_entry_point``), and
``gymnasium.make(latent_id, world_model=...)`` the real game behind a
:class:`~dreamgym.envs.latent.LatentObservation` and ``gymnasium.make_vec(latent_id, num_envs=N, ...)`` N real
games in worker processes seen through one batched V and M
(:class:`~dreamgym.envs.latent_vector.LatentVectorEnv`). The ids have no ``max_episode_steps``: the dream and
the real game already stop at the game's step cap, so no second ``TimeLimit`` is stacked on top.
"""

from __future__ import annotations

import gymnasium as gym

from dreamgym.games import GAMES, GameSpec, get_game


def dream_id(game: str) -> str:
    return f"dreamgym/{get_game(game).title}Dream-v0"


def latent_id(game: str) -> str:
    return f"dreamgym/{get_game(game).title}Latent-v0"


def register_game_envs(spec: GameSpec) -> None:
    """Registers the dream and latent ids of one game (e.g. one added with ``register_game``)."""
    kwargs = {"game": spec.name}
    if dream_id(spec.name) not in gym.registry:
        gym.register(
            dream_id(spec.name),
            entry_point="dreamgym.envs.dream:DreamEnv",
            vector_entry_point="dreamgym.envs.dream_vector:DreamVectorEnv",
            max_episode_steps=None,
            kwargs=kwargs,
        )
    if latent_id(spec.name) not in gym.registry:
        gym.register(
            latent_id(spec.name),
            entry_point="dreamgym.envs.latent:make_latent_env",
            vector_entry_point="dreamgym.envs.latent_vector:LatentVectorEnv",
            kwargs=kwargs,
        )


for _spec in GAMES.values():
    register_game_envs(_spec)
