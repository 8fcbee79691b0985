"""The worker pool: every job's result; a job whose worker dies or hangs runs again on a fresh worker; a job
that keeps failing is a clear error within its timeouts; no process of a worker outlives the pool."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import process_alive

from dreamgym.processes import WorkerPool, map_on_workers


def _square(x: int) -> int:
    return x * x


def _die_at_start() -> None:
    os._exit(3)


def _fail(x: int) -> int:
    raise ValueError(f"bad job {x}")


def _misbehave(job: tuple[str, str]) -> str:
    """Starts a child (as VizDoom starts its engine), records its pid in ``folder``, then hangs or segfaults
    (the first time only, with ``once``), else returns the folder's name."""
    mode, folder = job
    marker = Path(folder) / "tried"
    if mode.endswith("once") and marker.exists():
        return Path(folder).name
    marker.touch()
    engine = subprocess.Popen(["sleep", "600"])
    (Path(folder) / f"engine{engine.pid}").touch()
    if mode.startswith("hang"):
        time.sleep(600)
    os.kill(os.getpid(), signal.SIGSEGV)
    return "unreachable"


def _engines(folders: list[Path]) -> list[int]:
    return [int(p.name[len("engine") :]) for f in folders for p in f.glob("engine*")]


def _outliving(pids: list[int]) -> list[int]:
    """Those of ``pids`` still alive a few seconds on (a SIGKILL is delivered asynchronously)."""
    deadline = time.monotonic() + 5
    while any(process_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if process_alive(pid)]


def test_every_job_gives_its_result() -> None:
    assert sorted(map_on_workers(_square, range(6), workers=2)) == [x * x for x in range(6)]


def test_an_exception_in_a_job_propagates_with_the_workers_traceback() -> None:
    with pytest.raises(ValueError, match="bad job") as info:
        list(map_on_workers(_fail, [1, 2, 3], workers=2))
    assert "in _fail" in str(info.value.__cause__)


def test_a_hung_or_crashed_job_is_retried_and_its_engine_killed(tmp_path: Path) -> None:
    modes = ["hang-once", "segfault-once", "ok-once"]
    folders = [tmp_path / f"job{k}" for k in range(3)]
    for f in folders:
        f.mkdir()
    (folders[2] / "tried").touch()
    with WorkerPool(_misbehave, 2, timeout=2.0) as pool, pytest.warns(UserWarning, match="retrying job") as caught:
        results = dict(pool.run([(mode, str(f)) for mode, f in zip(modes, folders, strict=True)]))
    assert results == {k: f"job{k}" for k in range(3)} and pool.replaced == 2
    assert sorted(str(w.message).split(";")[0] for w in caught) == [
        "a worker died with signal SIGSEGV", "a worker hung (no result after 2 s)"]  # fmt: skip
    assert not _outliving(_engines(folders))


@pytest.mark.parametrize(("mode", "why"), [("hang", "hung \\(no result after 1 s\\)"), ("segfault", "SIGSEGV")])
def test_a_job_that_keeps_failing_is_a_clear_error_and_leaves_no_process(tmp_path: Path, mode: str, why: str) -> None:
    start = time.monotonic()
    pool = WorkerPool(_misbehave, 1, timeout=1.0, max_retries=1, describe=lambda job: f"the {job[0]} job")
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match=f"the {mode} job failed 2 times .*{why}"):
        list(pool.run([(mode, str(tmp_path))]))
    assert time.monotonic() - start < 30
    pids = _engines([tmp_path])
    assert len(pids) == 2 and not _outliving(pids)
    with pytest.raises(RuntimeError, match="closed"):
        list(pool.run([(mode, str(tmp_path))]))


def test_workers_that_die_while_starting_end_in_an_error_not_a_loop() -> None:
    pool = WorkerPool(_square, 1, _die_at_start, max_retries=1)
    with (
        pytest.warns(UserWarning, match="died with exit code 3; replacing it$"),
        pytest.raises(RuntimeError, match="workers failed to start 2 times"),
    ):
        list(pool.run([1, 2]))


def test_bad_pool_settings_are_one_clear_error() -> None:
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        WorkerPool(_square, 0)
    with pytest.raises(ValueError, match="timeout=0"):
        WorkerPool(_square, 1, timeout=0)
