"""Latent wrapper steps/s against the raw real game: the cost of V's encode and M's step on every real step.

Both envs take the same random actions in alternating rounds; the raw game steps without any frame
preprocessing, the wrapper does ``to_frame`` + V encode + M step on top of it.
"""

from __future__ import annotations

import torch

from benchmarks.timing import Row, env_stepper, interleaved_rates, random_actions
from dreamgym.envs import LatentObservation
from dreamgym.games import get_game
from dreamgym.world_model import WorldModel


def run(model: WorldModel, rounds: int, min_time: float, device: torch.device) -> list[Row]:
    spec = get_game(model.config.game)
    raw = spec.make_real_env()
    latent = LatentObservation(spec.make_real_env(), model, game=spec.name, device=device)
    actions = random_actions(spec.name, 1000)
    try:
        rates = interleaved_rates(
            {
                "raw": env_stepper(raw, [spec.to_game_action(a) for a in actions]),
                "latent": env_stepper(latent, actions),
            },
            rounds,
            min_time,
            device,
        )
    finally:
        raw.close()
        latent.close()
    overhead_ms = 1e3 * (1 / rates["latent"].median - 1 / rates["raw"].median)
    latent_rate, raw_rate = rates["latent"], rates["raw"]
    return [
        Row(f"latent_{spec.name}", "LatentObservation steps/s", latent_rate.median, "steps/s", f"raw {spec.env_id}",
            raw_rate.median, latent_rate.median / raw_rate.median, None,
            f"V encode + M step add {overhead_ms:.2f} ms per real step", latent_rate.spread_to(raw_rate))
    ]  # fmt: skip
