"""Data-parallel V and M under ``torchrun --nproc_per_node 2`` (gloo on CPU) on tiny synthetic data: the same
losses and weights as one process with the same global batch, shards that cover every row, exact resume."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dreamgym.checkpoint import load_tensors
from tests.test_training import tiny_m_args, tiny_vae_args, write_episodes
from training import distributed
from training.common import MODEL_FILE, STATE_FILE, load_state, run_finished
from training.encode import EncodeArgs, encode
from training.mdnrnn import make_batch, train_mdnrnn
from training.vae import train_vae

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli_flags(args: Any) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in dataclasses.asdict(args).items() if v is not None]


def torchrun(module: str, args: Any, nproc: int = 2, **popen: Any) -> subprocess.Popen:
    """``torchrun --standalone --nproc_per_node nproc -m module <args>`` (a free port per run, one thread each)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", module, *cli_flags(args)]  # fmt: skip
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)  # fmt: skip


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (from /proc): torchrun starts each rank in a session of its own."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def train_losses(out: Path) -> dict[int, float]:
    """step -> train/loss from the run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    return {e.step: e.value for e in events.Scalars("train/loss")}


def assert_same_run(single: Path, multi: Path, keys: tuple[str, ...], atol: float) -> None:
    """Per-step training losses, final weights and held-out metrics of two runs agree within float tolerance."""
    a, b = train_losses(single), train_losses(multi)
    assert a.keys() == b.keys() and len(a) > 1
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=1e-4)
    wa, wb = load_tensors(single / MODEL_FILE), load_tensors(multi / MODEL_FILE)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=0, atol=atol, msg=key)
    ea, eb = (json.loads((d / "eval.json").read_text()) for d in (single, multi))
    for key in keys:
        assert eb[key] == pytest.approx(ea[key], rel=1e-3), key
    provenance = json.loads((multi / "config.json").read_text())["provenance"]
    assert provenance["world_size"] == 2 and "world_size" not in json.loads((single / "config.json").read_text())[
        "provenance"]  # fmt: skip


# --- shards ---------------------------------------------------------------------------------------


def test_shards_cover_every_row_once_and_weigh_their_share(monkeypatch: pytest.MonkeyPatch) -> None:
    assert distributed.shard(5) == distributed.Shard(slice(0, 5, 1), 1.0)  # one process: the whole batch
    for n in (1, 2, 5, 16):
        rows, weights = [], []
        for r in range(3):
            monkeypatch.setattr(distributed, "world_size", lambda: 3)
            monkeypatch.setattr(distributed, "rank", lambda r=r: r)
            part = distributed.shard(n)
            if not part.empty:
                rows += list(range(n))[part.rows]
            weights.append(part.weight)
        assert sorted(rows) == list(range(n)) and sum(weights) == pytest.approx(1.0)
    assert distributed.shard(1) == distributed.Shard(slice(0, 1), 0.0)  # rank 2 of 3: a stand-in row


def test_a_stand_in_shard_of_m_adds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_training import series

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    episodes = [series(3), series(9)]
    whole = make_batch(episodes, "takecover", torch.Generator().manual_seed(1), torch.device("cpu"))
    part = make_batch(episodes, "takecover", torch.Generator().manual_seed(1), torch.device("cpu"),
                      distributed.shard(2))  # fmt: skip
    for key in whole:  # rank 1's row is row 1, with the noise the whole batch gives it
        torch.testing.assert_close(part[key], whole[key][1:2], rtol=0, atol=0)
    stand_in = make_batch(episodes[:1], "takecover", torch.Generator(), torch.device("cpu"), distributed.shard(1))
    assert not stand_in["step_mask"].any() and not stand_in["z_mask"].any()


# --- V and M under torchrun -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(episodes, latents of a 2-step tiny V)."""
    root = tmp_path_factory.mktemp("ddp")
    write_episodes(root / "eps", 6)
    threads = torch.get_num_threads()
    train_vae(tiny_vae_args(root / "eps", root / "vae", max_steps=2))
    torch.set_num_threads(threads)
    return root / "eps", encode(EncodeArgs(vae=str(root / "vae"), episodes=str(root / "eps"), device="cpu"))


def test_vae_on_two_ranks_matches_one_process(data: tuple[Path, Path], tmp_path: Path) -> None:
    # 15 frames a batch: shards of 8 and 7; the epoch's last batch is whatever is left.
    single = tiny_vae_args(data[0], tmp_path / "single", batch_size=15, log_every=1, checkpoint_steps=2)
    multi = dataclasses.replace(single, out=str(tmp_path / "multi"))
    proc = torchrun("training.vae", multi)
    train_vae(single)
    finish(proc)
    assert_same_run(tmp_path / "single", tmp_path / "multi", ("recon_mse", "kl", "step"), atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "multi").glob("recon_*.png")) == ["recon_epoch_001.png"]


def test_mdnrnn_on_two_ranks_matches_one_process(data: tuple[Path, Path], tmp_path: Path) -> None:
    # 5 training episodes, 2 a batch: each epoch ends with a 1-episode batch (rank 1 runs a stand-in row).
    single = dataclasses.replace(tiny_m_args(data[1], tmp_path / "single"), epochs=2, log_every=1)
    multi = dataclasses.replace(single, out=str(tmp_path / "multi"))
    proc = torchrun("training.mdnrnn", multi)
    train_mdnrnn(single)
    finish(proc)
    assert_same_run(tmp_path / "single", tmp_path / "multi", ("nll", "done_rate_predicted", "step"), atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds torchrun's ranks in /proc")
def test_mdnrnn_on_two_ranks_killed_with_sigkill_resumes_exactly(data: tuple[Path, Path], tmp_path: Path) -> None:
    plain = dataclasses.replace(tiny_m_args(data[1], tmp_path / "plain"), epochs=20, checkpoint_steps=1)
    killed = dataclasses.replace(plain, out=str(tmp_path / "killed"))
    proc = torchrun("training.mdnrnn", killed)
    state = tmp_path / "killed" / STATE_FILE
    deadline = time.monotonic() + 240
    while not state.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    for pid in [*descendants(proc.pid), proc.pid]:  # both ranks, then torchrun
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.communicate()
    progress = load_state(state, tensors=False)["progress"]
    assert 0 < progress["step"] < 60 and not progress["finished"], "the kill must land mid-run"
    assert "mdnrnn: resuming at" in finish(torchrun("training.mdnrnn", killed))
    finish(torchrun("training.mdnrnn", plain))
    assert run_finished(tmp_path / "killed")
    assert (tmp_path / "killed" / MODEL_FILE).read_bytes() == (tmp_path / "plain" / MODEL_FILE).read_bytes()
