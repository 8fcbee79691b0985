"""Train Stable-Baselines3 PPO inside the dream, then score the policy in the real game.

    python -m agents.sb3_ppo --world-model runs/takecover/world_model --timesteps 200000 --num-envs 16

PPO collects its rollouts from ``--num-envs`` dreams stepped as one batch (the dream VectorEnv behind
:class:`dreamgym.envs.sb3.DreamVecEnvAdapter`), logs to TensorBoard under ``--out/tb``, saves the policy as
``--out/ppo.zip``, then plays ``--eval-episodes`` episodes (seeds ``--seed + k``) in the dream and in the
real game seen through the same world model (``dreamgym/<Game>Latent-v0``) and prints mean ± std of each:
the gap between the two is the cheapest check of how faithful the dream is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO

from dreamgym.cli_args import Count, NonNegative, Positive, parse_args
from dreamgym.envs.registration import dream_id, latent_id
from dreamgym.envs.sb3 import make_sb3_vec_env
from dreamgym.episodes import play_episode


@dataclass(frozen=True)
class Args:
    world_model: str = "takecover"
    """world model bundle folder or shipped bundle name"""
    game: str = "takecover"
    """game spec name (the bundle must be for this game)"""
    timesteps: Count = 200_000
    """PPO environment steps in the dream"""
    num_envs: Count = 16
    """dreams stepped as one batch"""
    n_steps: Count = 128
    """PPO rollout length per env"""
    temperature: Positive | None = None
    """dream temperature (default: the game's, 1.15 for TakeCover)"""
    obs_mode: str = "zh"
    """policy input: zh | zch | z"""
    device: str = "auto"
    """device of the dream and of the world model in the real game"""
    seed: NonNegative = 0
    """PPO seed; evaluation episode k uses seed + k"""
    out: str = "runs/sb3_ppo"
    """output folder: ppo.zip and TensorBoard events"""
    eval_episodes: Count = 10
    """episodes scored in the dream and in the real game"""
    eval_max_steps: Count | None = None
    """cap on evaluation episode length (default: the game's)"""


def evaluate(model: PPO, env: gym.Env, episodes: int, seed: int) -> np.ndarray:
    """Returns of ``episodes`` deterministic-policy episodes, episode k from ``seed + k``."""

    def act(obs: Any) -> Any:
        return model.predict(obs, deterministic=True)[0]

    return np.array([play_episode(env, act, seed + k).total_reward for k in range(episodes)])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv, __doc__)
    out = Path(args.out)
    env_kwargs = {"world_model": args.world_model, "obs_mode": args.obs_mode, "device": args.device}
    dream_kwargs = {**env_kwargs, "temperature": args.temperature}
    envs = make_sb3_vec_env(dream_id(args.game), args.num_envs, **dream_kwargs)
    model = PPO("MlpPolicy", envs, n_steps=args.n_steps, seed=args.seed, tensorboard_log=str(out / "tb"), verbose=1)
    model.learn(total_timesteps=args.timesteps, progress_bar=False)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "ppo.zip")
    print(f"saved {out / 'ppo.zip'}")
    cap = {"max_episode_steps": args.eval_max_steps} if args.eval_max_steps else {}
    for name, env_id, kwargs in (
        ("dream", dream_id(args.game), dream_kwargs),
        ("real", latent_id(args.game), env_kwargs),
    ):
        env = gym.make(env_id, **kwargs, **cap)
        try:
            returns = evaluate(model, env, args.eval_episodes, args.seed)
        finally:
            env.close()
        print(f"{name}: {returns.mean():.1f} ± {returns.std():.1f} over {len(returns)} episodes ({env_id})")


if __name__ == "__main__":
    main()
