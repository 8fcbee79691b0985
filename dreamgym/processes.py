"""Worker processes that never leave a game engine behind.

VizDoom runs its engine as a child process of the Python process that made the env. If a worker dies
without closing its env, that engine is orphaned and keeps a core busy. Workers therefore (1) lead their
own process group, so a parent that must kill a hung worker kills its engine too (:func:`kill_group`),
and (2) get SIGTERM when their parent dies and close their games before exiting.

:func:`map_on_workers` runs idempotent jobs (one episode each) on such workers and never waits forever:
a worker that dies (a game engine that crashes takes its worker down) breaks the pool, which is restarted
with the unfinished jobs.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")

_PR_SET_PDEATHSIG = 1


def become_worker(cleanup: Callable[[], None]) -> None:
    """Call first thing in a worker: own process group; on SIGTERM or parent death, ``cleanup`` then exit."""
    os.setpgrp()

    def on_term(signum: int, frame: object) -> None:
        try:
            cleanup()
        finally:
            os._exit(1)

    signal.signal(signal.SIGTERM, on_term)
    try:
        ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the parent's own cleanup has to do
        pass
    if os.getppid() == 1:  # the parent died before the death signal was armed
        on_term(signal.SIGTERM, None)


def kill_group(pid: int) -> None:
    """SIGKILLs a worker started with :func:`become_worker` together with its game engines."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def map_on_workers(
    fn: Callable[[Job], Result],
    jobs: Iterable[Job],
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
    restarts: int = 2,
) -> Iterator[Result]:
    """Yields ``fn(job)`` for every job, in order of completion, on ``workers`` spawned processes set up by
    ``initializer(*initargs)``. Jobs must be idempotent: when a worker dies, the unfinished jobs run again
    on a fresh pool, at most ``restarts`` times, after which a RuntimeError says so. An exception raised by
    ``fn`` stops everything and propagates."""
    pending = list(jobs)
    for attempt in range(restarts + 1):
        lost: list[Job] = []
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=initializer,
                                   initargs=initargs)  # fmt: skip
        try:
            futures = {pool.submit(fn, job): job for job in pending}
            for future in as_completed(futures):
                try:
                    result = future.result()
                except BrokenProcessPool:
                    lost.append(futures[future])
                    continue
                yield result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if not lost:
            return
        if attempt < restarts:
            warnings.warn(f"a worker died; restarting the pool for the {len(lost)} unfinished jobs", stacklevel=2)
        pending = lost
    raise RuntimeError(f"workers kept dying: {len(pending)} jobs unfinished after {restarts} restarts of the pool")
