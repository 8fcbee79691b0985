"""Shared fixtures: real game envs, subprocess runs of the scripts, tiny random world models."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import gymnasium as gym
import pytest
import torch

from dreamgym.games import GameSpec, get_game
from dreamgym.models.vae import VAEConfig
from dreamgym.world_model import WorldModel, WorldModelConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def script_env() -> dict[str, str]:
    """Environment for ``python -m training.X`` subprocesses: the repo importable from any working folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture
def run_module(tmp_path: Path, script_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess]:
    """``run_module("training.collect", "--episodes", "2")`` runs a script in ``tmp_path`` and fails the test
    (showing its output) when it exits non-zero; returns the finished process with text stdout/stderr."""

    def run(module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=tmp_path,
            env=script_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            pytest.fail(f"{module} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


@pytest.fixture
def real_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple[GameSpec, gym.Env]]]:
    """``real_env("takecover", max_steps)`` -> (spec, capped real env), closed after the test.

    The test runs in ``tmp_path`` because ViZDoom writes ``_vizdoom.ini`` into the working folder.
    """
    monkeypatch.chdir(tmp_path)
    envs: list[gym.Env] = []

    def make(game: str, max_steps: int | None = None) -> tuple[GameSpec, gym.Env]:
        spec = get_game(game)
        envs.append(spec.make_real_env(max_episode_steps=max_steps))
        return spec, envs[-1]

    yield make
    for env in envs:
        env.close()


# --- tiny world models: no test needs trained files ---------------------------------------------
TINY_Z = 8
TINY_HIDDEN = 16


def make_tiny_world_model(game: str = "takecover", seed: int = 0, num_initial: int = 12) -> WorldModel:
    """A randomly initialised bundle with z=8 and 16 LSTM units for ``game`` (deterministic in ``seed``)."""
    torch.manual_seed(seed)
    config = WorldModelConfig.for_game(game, z_size=TINY_Z, hidden_size=TINY_HIDDEN)
    config = WorldModelConfig(config.game, VAEConfig(z_size=TINY_Z), config.mdnrnn)
    generator = torch.Generator().manual_seed(seed)
    mu = torch.randn(num_initial, TINY_Z, generator=generator)
    logvar = torch.full((num_initial, TINY_Z), -2.0)
    return WorldModel(config, mu, logvar, {"note": "tiny random test bundle"}).eval()


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``tiny_bundle("takecover")`` saves a tiny random bundle and returns its folder."""

    def build(game: str = "takecover", seed: int = 0) -> Path:
        folder = tmp_path / f"bundle_{game}_{seed}"
        make_tiny_world_model(game, seed).save(folder)
        return folder

    return build


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: test machines are small and shared, and oversubscribed threads make
    conv training ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
