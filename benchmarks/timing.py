"""What every benchmark shares: result rows, interleaved timing, the machine description, random world models.

Every figure is a ratio against a baseline measured in the same run, "higher is better": a rate over the
baseline's rate, or the baseline's cost (time, bytes) over the candidate's. Candidates and their baselines
are timed in alternating rounds (A, B, A, B, ...) after a warm-up, and each rate is the median over the
rounds, so background load and clock changes hit both alike.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from dreamgym.checkpoint import versions
from dreamgym.games import get_game
from dreamgym.runs import seeded_module
from dreamgym.world_model import WorldModel, WorldModelConfig


@dataclass(frozen=True)
class Row:
    """One figure of the results table: ``value`` (in ``unit``) of a candidate and the ratio to its baseline.

    ``ratio`` is higher-is-better (candidate rate / baseline rate, or baseline cost / candidate cost);
    ``target`` is the ratio the issue asks for (None: reported only).
    """

    benchmark: str
    figure: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    ratio: float
    target: float | None = None
    note: str = ""
    spread: str = ""
    """slowest and fastest round of the candidate and of the baseline (results.json only)"""

    @property
    def met(self) -> bool | None:
        return None if self.target is None else bool(self.ratio >= self.target)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "met": self.met}


@dataclass(frozen=True)
class Rate:
    """Median rate (units per second) over rounds, with the slowest and fastest round."""

    median: float
    low: float
    high: float

    def spread_to(self, baseline: Rate) -> str:
        return f"rounds {self.low:.4g}-{self.high:.4g} vs {baseline.low:.4g}-{baseline.high:.4g}"


CPU = torch.device("cpu")


def sync(device: torch.device) -> None:
    """Waits for queued GPU work, so the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rate(work: Callable[[], float], min_time: float, device: torch.device = CPU) -> float:
    """Units per second of ``work`` (one call does some work and returns how many units), called until
    ``min_time`` seconds have passed."""
    sync(device)
    done, start = 0.0, time.perf_counter()
    while True:
        done += work()
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return done / elapsed


def interleaved_rates(
    candidates: dict[str, Callable[[], float]],
    rounds: int,
    min_time: float,
    device: torch.device = CPU,
) -> dict[str, Rate]:
    """Rate of each candidate: one warm-up call each, then ``rounds`` rounds timing all in turn; medians."""
    for work in candidates.values():
        work()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, work in candidates.items():
            samples[name].append(timed_rate(work, min_time, device))
    return {name: Rate(statistics.median(v), min(v), max(v)) for name, v in samples.items()}


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, SIMD flags, load, torch threads, GPU, package versions and the date of this run."""
    info: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": os.cpu_count(),
        "cores_usable": usable_cores(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "versions": {**versions(), **{p: _package_version(p) for p in ("vizdoom", "box2d", "cma")}},
    }
    return info


def env_stepper(env: gym.Env, actions: Sequence[Any], observe: Callable[[Any], object] | None = None
                ) -> Callable[[], float]:  # fmt: skip
    """Work for :func:`interleaved_rates`: one step of ``env`` per call, cycling through ``actions`` (reset
    at episode ends); ``observe`` is applied to every observation."""
    env.reset(seed=0)
    cycle = itertools.cycle(actions)

    def work() -> float:
        obs, _, terminated, truncated, _ = env.step(next(cycle))
        if observe is not None:
            observe(obs)
        if terminated or truncated:
            env.reset()
        return 1

    return work


def random_actions(game: str, n: int, seed: int = 0) -> np.ndarray:
    """(n,) or (n, *shape) random actions of the game's controller action space."""
    space = copy.deepcopy(get_game(game).action_space)
    space.seed(seed)
    return np.stack([space.sample() for _ in range(n)])


def random_world_model(game: str, mean_episode_steps: float, device: torch.device, seed: int = 0) -> WorldModel:
    """A seeded random world model with the game's default (paper) sizes whose dream episodes last
    ``mean_episode_steps`` (>= 1) on average: done head weight 0, calibrated probability 1 / mean_episode_steps."""
    config = WorldModelConfig.for_game(game)
    generator = torch.Generator().manual_seed(seed)
    mu = torch.randn(16, config.vae.z_size, generator=generator)
    logvar = torch.full((16, config.vae.z_size), -2.0)
    model = seeded_module(lambda: WorldModel(config, mu, logvar, {"note": "random benchmark bundle"}), seed)
    p = min(1.0 / mean_episode_steps, 1 - 1e-6)
    with torch.no_grad():
        model.mdnrnn.done.weight.zero_()
        model.mdnrnn.done.bias.fill_(math.log(p / (1 - p)) + math.log(config.mdnrnn.done_pos_weight))
    return model.to(device).eval()  # type: ignore[return-value]


def load_or_random(world_model: str | None, game: str, mean_episode_steps: float, device: torch.device) -> WorldModel:
    """The bundle at ``world_model``, or a random one of the game's sizes (see :func:`random_world_model`)."""
    if world_model is not None:
        return WorldModel.load(world_model, device)
    return random_world_model(game, mean_episode_steps, device)
