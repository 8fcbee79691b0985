"""Which env to score controllers in and on which backend: command-line fields shared by the agents scripts.

Backends (``--backend``): ``vector`` plays a whole generation as one VectorEnv (dream ids and plain
Gymnasium ids), or, for dreamgym Latent ids, a latent VectorEnv of ``--workers`` real games in worker
processes seen through one batched V and M, each game taking the next episode when its own ends; ``pool``
plays episodes on local worker processes, one latent env each; ``ray`` does the same on a Ray cluster
(``--ray-address``; optional extra ``dreamgym[ray]``). ``auto`` picks ``ray`` when an address is given, else
``pool`` for Latent ids (on 2 CPU cores it is faster than ``vector``, docs/scale-out.md, and it survives a hung
or crashed game), else ``vector``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from dreamgym.cli_args import Positive
from dreamgym.controller import ControllerConfig
from dreamgym.devices import resolve_device
from dreamgym.runs import RunArgs, set_threads

from .rollout import Evaluator, VectorEvaluator, env_kwargs_for, is_dream, is_dreamgym, make_env
from .workers import PoolEvaluator, RayEvaluator

BACKENDS = ("auto", "vector", "pool", "ray")


@dataclass(frozen=True)
class EnvArgs(RunArgs):
    """The env a controller plays and how (``--device``: controller matmuls and dreamgym envs; ``--workers``: the
    pool backend's processes; ``--threads``: pass 1 while other jobs share the cores, oversubscribed threads made a
    dream generation 3x slower on 2 busy cores)."""

    env: str = "dreamgym/TakeCoverDream-v0"
    """Gymnasium id: dreamgym/<Game>Dream-v0, dreamgym/<Game>Latent-v0, or any Box-observation env"""
    world_model: str | None = None
    """dreamgym envs: world model bundle folder or shipped name"""
    obs_mode: str | None = None
    """dreamgym envs: controller input, zh | zch | z"""
    temperature: Positive | None = None
    """dream envs: sampling temperature tau"""
    env_kwargs: str = "{}"
    """further keyword arguments for the env, as a JSON object"""
    backend: str = "auto"
    """auto | vector | pool | ray (see agents.backends)"""
    ray_address: str | None = None
    """ray backend: auto | HOST:PORT (implies --backend ray)"""
    episode_timeout: Positive = 600.0
    """pool/ray backends: seconds after which an unfinished episode's worker counts as hung and is retried"""


def parse_env_kwargs(args: EnvArgs) -> dict[str, Any]:
    """The env's keyword arguments from ``--env-kwargs`` plus the named dreamgym options that were given."""
    try:
        kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as err:
        raise ValueError(f"--env-kwargs is not valid JSON: {err}") from err
    if not isinstance(kwargs, dict):
        raise ValueError(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}")
    named = {"world_model": args.world_model, "obs_mode": args.obs_mode, "temperature": args.temperature}
    given = {k: v for k, v in named.items() if v is not None}
    if given and not is_dreamgym(args.env):
        raise ValueError(f"{sorted(given)} only apply to dreamgym envs, not {args.env!r}")
    return {**kwargs, **given}


def backend_name(args: EnvArgs) -> str:
    if args.backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {BACKENDS}, got {args.backend!r}")
    if args.backend != "auto":
        return args.backend
    if args.ray_address is not None:
        return "ray"
    return "pool" if is_dreamgym(args.env) and not is_dream(args.env) else "vector"


def make_single_env(args: EnvArgs, **make_kwargs: Any) -> gym.Env:
    """One env of ``args.env`` in this process (``make_kwargs`` such as ``render_mode`` go to ``gym.make``)."""
    return make_env(
        args.env, env_kwargs_for(args.env, parse_env_kwargs(args), resolve_device(args.device)), **make_kwargs
    )


def probe_config(args: EnvArgs, bias: bool | None = None, hidden: int = 0, skip: bool = False) -> ControllerConfig:
    """The controller config for ``args.env`` (made once here, so a missing game fails fast and clearly)."""
    env = make_single_env(args)
    try:
        return ControllerConfig.for_env(env, args.env, bias, hidden, skip)
    finally:
        env.close()


def make_evaluator(args: EnvArgs, config: ControllerConfig, progress: str | None = None) -> Evaluator:
    """The backend ``args`` ask for; sets this process's torch threads (``--threads``) first. ``progress``:
    label of a per-episode progress bar (pool and ray backends; a vector env finishes all episodes at once)."""
    kwargs, name = parse_env_kwargs(args), backend_name(args)
    set_threads(args.threads)
    if name == "vector":
        return VectorEvaluator(args.env, kwargs, config, args.device, num_envs=args.workers)
    if name == "pool":
        return PoolEvaluator(
            args.env, kwargs, config, args.workers, args.episode_timeout, device=args.device, progress=progress
        )
    return RayEvaluator(
        args.env, kwargs, config, args.ray_address, args.episode_timeout, device=args.device, progress=progress
    )
