"""Latent wrapper steps/s against the raw real game: the cost of V's encode and M's step on every real step.

Both envs take the same random actions in alternating rounds; the raw game steps without any frame
preprocessing, the wrapper does ``to_frame`` + V encode + M step on top of it. A second row times the
latent VectorEnv (``VECTOR_ENVS`` games in worker processes, V and M batched) against the single wrapper,
in the same alternating rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorEnv

from benchmarks.timing import Row, env_stepper, interleaved_rates, random_actions
from dreamgym.envs import LatentObservation, LatentVectorEnv
from dreamgym.games import get_game
from dreamgym.world_model import WorldModel

LATENT_TARGET = 0.3  # one latent env should run at least this fraction of the raw game's steps/s
VECTOR_ENVS = 4
VECTOR_TARGET = 1.5  # the vector env at N = 4 should beat one latent env by this much, even on 2 cores


def vector_stepper(envs: VectorEnv, actions: Sequence[Any]) -> Callable[[], float]:
    """Work for :func:`interleaved_rates`: one step of all N envs per call (N units), each env cycling through
    ``actions`` from its own offset; the env resets finished games itself."""
    envs.reset(seed=0)
    n, step = envs.num_envs, iter(range(10**12))

    def work() -> float:
        t = next(step)
        envs.step(np.stack([actions[(t + 97 * i) % len(actions)] for i in range(n)]))
        return n

    return work


def run(model: WorldModel, rounds: int, min_time: float, device: torch.device) -> list[Row]:
    spec = get_game(model.config.game)
    raw = spec.make_real_env()
    latent = LatentObservation(spec.make_real_env(), model, game=spec.name, device=device)
    vector = LatentVectorEnv(VECTOR_ENVS, model, game=spec.name, device=device)
    actions = random_actions(spec.name, 1000)
    try:
        rates = interleaved_rates(
            {
                "raw": env_stepper(raw, [spec.to_game_action(a) for a in actions]),
                "latent": env_stepper(latent, actions),
                "vector": vector_stepper(vector, actions),
            },
            rounds,
            min_time,
            device,
        )
    finally:
        raw.close()
        latent.close()
        vector.close()
    overhead_ms = 1e3 * (1 / rates["latent"].median - 1 / rates["raw"].median)
    latent_rate, raw_rate, vector_rate = rates["latent"], rates["raw"], rates["vector"]
    return [
        Row(f"latent_{spec.name}", "LatentObservation steps/s", latent_rate.median, "steps/s", f"raw {spec.env_id}",
            raw_rate.median, latent_rate.median / raw_rate.median, LATENT_TARGET,
            f"V encode + M step add {overhead_ms:.2f} ms per real step", latent_rate.spread_to(raw_rate)),
        Row(f"latent_{spec.name}", f"LatentVectorEnv steps/s, N={VECTOR_ENVS}", vector_rate.median, "steps/s",
            "one LatentObservation", latent_rate.median, vector_rate.median / latent_rate.median, VECTOR_TARGET,
            f"{VECTOR_ENVS} games in worker processes, V encoding in the {vector.encode_in}, M batched",
            vector_rate.spread_to(latent_rate)),
    ]  # fmt: skip
