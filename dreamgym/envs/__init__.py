"""Gymnasium environments of a world model: the dream (single and batched) and the latent real-game wrapper.

Importing this package registers ``dreamgym/<Game>Dream-v0`` and ``dreamgym/<Game>Latent-v0`` for every
game spec (see :mod:`dreamgym.envs.registration`).
"""

from dreamgym.envs.dream import DreamCore, DreamEnv
from dreamgym.envs.dream_vector import DreamVectorEnv
from dreamgym.envs.latent import LatentCore, LatentObservation, make_latent_env
from dreamgym.envs.latent_vector import LatentVectorEnv
from dreamgym.envs.registration import dream_id, latent_id, register_game_envs

__all__ = [
    "DreamCore", "DreamEnv", "DreamVectorEnv", "LatentCore", "LatentObservation", "LatentVectorEnv", "dream_id",
    "latent_id", "make_latent_env",
    "register_game_envs",
]  # fmt: skip
