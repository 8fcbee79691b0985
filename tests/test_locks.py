"""One writer per folder: a second run on a locked folder fails at once naming the first and touches none of
its files; the lock dies with its holder; only dead writers' temporary files are cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dreamgym.data import remove_stale_temps, save_arrays
from dreamgym.locks import LOCK_FILE, FolderBusyError, folder_lock

HOLD = "import sys, time; from dreamgym.locks import folder_lock\nwith folder_lock(sys.argv[1]): time.sleep(600)"


def test_second_collect_on_a_locked_folder_exits_with_one_line_naming_the_holder(tmp_path: Path, script_env) -> None:
    out = tmp_path / "eps"
    with folder_lock(out):
        live = out / f".episode_000000.npz.pid{os.getpid()}.abcd1234.tmp"  # the holder is writing this shard
        live.write_bytes(b"half a shard")
        proc = subprocess.run([sys.executable, "-m", "training.collect", "--game", "carracing", "--episodes", "1",
                               "--max-steps", "5", "--out", str(out)], cwd=tmp_path, env=script_env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert f"is in use by PID {os.getpid()} on " in proc.stderr and "wait for it to finish" in proc.stderr
        assert live.read_bytes() == b"half a shard" and not list(out.glob("episode_*.npz"))
    with folder_lock(out):  # released by the holder
        pass


def test_the_lock_dies_with_its_holder(tmp_path: Path, script_env) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], env=script_env)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / LOCK_FILE).is_file() or not (tmp_path / LOCK_FILE).read_text():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        busy = f"in use by PID {holder.pid} on .*folder_lock"
        with pytest.raises(FolderBusyError, match=busy), folder_lock(tmp_path):
            pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with folder_lock(tmp_path):
        pass


def test_only_dead_writers_temporary_files_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    mine = tmp_path / f".episode_000001.npz.pid{os.getpid()}.abcd1234.tmp"
    orphans = [tmp_path / f".episode_000002.npz.pid{dead.pid}.abcd1234.tmp", tmp_path / ".episode_000003.npz.x.tmp"]
    for path in [mine, *orphans]:
        path.write_bytes(b"partial")
    save_arrays(tmp_path / "episode_000000.npz", {"x": [1]})
    remove_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, "episode_000000.npz"])
