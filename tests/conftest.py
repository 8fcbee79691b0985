"""Shared fixtures: real game envs, subprocess runs of the scripts, tiny random world models."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
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


# --- a Ray cluster of its own: `ray start --head` in a subprocess --------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """The address of a one-node Ray cluster (2 CPUs) started by ``ray start --head --block`` for this
    session, as on a real head node; this process joins it on first use and leaves it at the end.

    Its workers import the test modules (tests/ on their PYTHONPATH) and kill a dead worker's children
    (the raylet as subreaper: a SIGKILLed worker's game engine goes with it)."""
    import ray

    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's unix sockets live under it
    port = _free_port()
    ports = {f"--{name}": str(_free_port()) for name in
             ("ray-client-server-port", "dashboard-port", "dashboard-agent-listen-port")}  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "tests"), RAY_USAGE_STATS_ENABLED="0",
               RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper="true")  # fmt: skip
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
           "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp}",
           "--disable-usage-stats",
           *(f"{k}={v}" for k, v in ports.items())]  # fmt: skip
    log = open(temp / "ray_start.log", "w+")
    head = subprocess.Popen(cmd, cwd=temp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "block forever" not in (temp / "ray_start.log").read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head failed:\n{(temp / 'ray_start.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        ray.shutdown()
        head.terminate()  # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
