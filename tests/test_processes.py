"""map_on_workers: every job's result, a dead worker's jobs rerun on a fresh pool, never a wait forever."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dreamgym.processes import map_on_workers


def _square(x: int) -> int:
    return x * x


def _die_once(marker: str) -> str:
    """Kills its worker the first time it runs (as a crashing game engine does), then succeeds."""
    path = Path(marker)
    if not path.exists():
        path.touch()
        os._exit(3)
    return path.name


def _always_die(x: int) -> int:
    os._exit(3)


def _fail(x: int) -> int:
    raise ValueError(f"bad job {x}")


def test_every_job_gives_its_result() -> None:
    assert sorted(map_on_workers(_square, range(6), workers=2)) == [x * x for x in range(6)]


def test_jobs_of_a_dead_worker_run_again_on_a_fresh_pool(tmp_path: Path) -> None:
    jobs = [str(tmp_path / f"job{k}") for k in range(4)]
    with pytest.warns(UserWarning, match="a worker died; restarting the pool"):
        results = sorted(map_on_workers(_die_once, jobs, workers=2, restarts=4))
    assert results == [f"job{k}" for k in range(4)]


def test_workers_that_keep_dying_end_in_an_error_not_a_hang() -> None:
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="workers kept dying: 2 jobs unfinished"):
        list(map_on_workers(_always_die, [1, 2], workers=2, restarts=1))


def test_an_exception_in_a_job_propagates() -> None:
    with pytest.raises(ValueError, match="bad job"):
        list(map_on_workers(_fail, [1, 2, 3], workers=2))
