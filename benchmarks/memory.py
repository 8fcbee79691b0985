"""Peak memory per dream env, against the bare LSTMCell loop and one real game env.

Each measurement runs in a fresh subprocess, so allocator caches of other benchmarks do not count. A child
builds the random world model, notes its memory, then makes N envs (or the bare loop of N rows), resets
and steps them a few times and reports its peak (CPU: the program's peak resident memory, VmHWM; GPU:
peak allocated bytes) minus the memory noted before, for a small and then a large N. Per env =
(peak(N2) - peak(N1)) / (N2 - N1), which cancels the fixed costs (weights, code). A real game env is
measured as the resident memory it adds to this process and to the processes it starts (ViZDoom runs its
engine in a child process). The tensors the dream keeps between steps are also reported exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.timing import Row, random_actions, random_world_model
from dreamgym.envs import DreamVectorEnv
from dreamgym.games import get_game

REPO_ROOT = Path(__file__).resolve().parents[1]
STEPS = 5


def _status_kib(field: str, pid: int | str = "self") -> int:
    """A memory field of /proc/<pid>/status: VmRSS (resident now) or VmHWM (peak resident of this program;
    unlike getrusage's ru_maxrss it does not start at the parent's size when this process was forked)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _tree_rss_bytes() -> int:
    """Resident bytes of this process and its child processes."""
    children: list[str] = []
    for task in Path("/proc/self/task").iterdir():
        children += (task / "children").read_text().split()
    return 1024 * (_status_kib("VmRSS") + sum(_status_kib("VmRSS", pid) for pid in children))


def _state_bytes(envs: DreamVectorEnv) -> int:
    """Bytes of the per-env tensors (first dimension N) the dream keeps between steps, each storage once."""
    n, storages = envs.num_envs, {}
    parts = [envs.core, *(v for v in vars(envs.core).values() if hasattr(v, "__dict__"))]
    for part in parts:
        for value in vars(part).values():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == n:
                storage = value.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return 1024 * _status_kib("VmHWM")


def measure(kind: str, game: str, sizes: list[int], device: str) -> list[dict[str, int]]:
    """In a fresh process: the peak bytes ``kind`` (``dream``, ``lstm`` or ``real``) adds, for each N in
    ``sizes`` (increasing: the process's peak so far then belongs to the largest N)."""
    from benchmarks.dream_steps import lstm_work

    torch.set_num_threads(1)
    dev = torch.device(device)
    if kind == "real":
        before = _tree_rss_bytes()
        env = get_game(game).make_real_env()
        env.reset(seed=0)
        for action in random_actions(game, 50):
            env.step(get_game(game).to_game_action(action))
        used = _tree_rss_bytes() - before
        env.close()
        return [{"bytes": used}]
    model = random_world_model(game, 300, dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
    else:
        before = 1024 * _status_kib("VmRSS")
    results = []
    for n in sizes:
        result = {}
        if kind == "dream":
            envs = DreamVectorEnv(n, model, device=dev)
            envs.reset(seed=0)
            actions = random_actions(game, n)
            for _ in range(STEPS):
                envs.step(actions)
            result["state_bytes"] = _state_bytes(envs)
            del envs
        else:
            work = lstm_work(model.config.mdnrnn, n, dev)
            for _ in range(STEPS):
                work()
            del work
        results.append({**result, "bytes": _peak_bytes(dev) - before})
    return results


def _child(kind: str, game: str, sizes: list[int], device: str) -> list[dict[str, int]]:
    """Runs :func:`measure` in a new Python process (in a temporary folder: ViZDoom writes files there)."""
    call = f"measure({kind!r}, {game!r}, {sizes}, {device!r})"
    code = f"import json; from benchmarks.memory import measure; print(json.dumps({call}))"
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp, env={**os.environ, "PYTHONPATH": path},
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement of {kind} at N={sizes} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(game: str, sizes: tuple[int, int], device: torch.device) -> list[Row]:
    small, large = sizes
    per_env = {}
    for kind in ("dream", "lstm"):
        a, b = _child(kind, game, [small, large], str(device))
        per_env[kind] = (b["bytes"] - a["bytes"]) / (large - small)
        if per_env[kind] <= 0:
            raise RuntimeError(f"{kind}: peak memory did not grow from N={small} ({a}) to N={large} ({b})")
        if kind == "dream":
            state = b["state_bytes"] / large
    real = _child("real", game, [1], "cpu")[0]["bytes"]
    dream = per_env["dream"]
    what = "peak allocated GPU bytes" if device.type == "cuda" else "peak RSS"
    note = f"{what}, N={small} vs N={large}; dream state kept between steps {state / 1024:.1f} KiB/env"
    bench, kib = f"memory_{game}", "KiB/env"
    return [
        Row(bench, "dream VectorEnv peak memory per env", dream / 1024, kib, "bare LSTMCell + Linear loop",
            per_env["lstm"] / 1024, per_env["lstm"] / dream, None, note),
        Row(bench, "dream VectorEnv peak memory per env", dream / 1024, kib, f"one real {get_game(game).env_id} env",
            real / 1024, real / dream, None, "real: resident memory of the env and its engine process"),
    ]  # fmt: skip
