"""The one worker pool: idempotent jobs on processes that never hang a run or leave a game engine behind.

VizDoom runs its engine as a child process of the Python process that made the env. If a worker dies
without closing its env, that engine is orphaned and keeps a core busy. Workers therefore (1) lead their
own process group, so a parent that must kill a hung worker kills its engine too (:func:`kill_group`),
and (2) get SIGTERM when their parent dies and close their games (:func:`on_worker_exit`) before exiting.

:class:`WorkerPool` runs jobs (one episode each: collect, relabel, evaluate) and never waits forever: a
worker that dies (a crashing engine takes it down) or gives no result within ``timeout`` seconds is killed
with its process group and replaced, and its job runs again, at most ``max_retries`` times, after which a
RuntimeError names the job. A Python exception raised by a job is a bug, not bad luck: it is raised in the
parent at once, with the worker's traceback as its cause.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import pickle
import signal
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")

_PR_SET_PDEATHSIG = 1
_CLEANUPS: list[Callable[[], None]] = []


def on_worker_exit(cleanup: Callable[[], None]) -> None:
    """Registers ``cleanup`` (e.g. ``env.close``) to run when this worker exits: normally, on SIGTERM or when
    its parent dies. Call it from a pool's initializer."""
    _CLEANUPS.append(cleanup)


def _run_cleanups() -> None:
    while _CLEANUPS:
        _CLEANUPS.pop()()


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


class _RemoteTraceback(Exception):
    """A worker's traceback, attached as the cause of the exception re-raised in the parent."""

    def __str__(self) -> str:
        return f"\n\nin the worker:\n{self.args[0]}"


def _serve(conn: Connection, fn: Callable[[Any], Any], initializer: Callable[..., None] | None,
           initargs: tuple[Any, ...]) -> None:  # fmt: skip
    """A worker's life: set up, say ``ready``, then answer jobs with ``fn(job)`` until the pipe closes."""
    become_worker(_run_cleanups)
    try:
        if initializer is not None:
            initializer(*initargs)
        conn.send(("ready", None))
        while True:
            try:
                job = conn.recv()
            except EOFError:
                return
            conn.send(("done", fn(job)))
    except Exception as err:  # reported to the parent, which raises it
        try:
            exc = pickle.dumps(err)
        except Exception:
            exc = None
        conn.send(("error", (exc, traceback.format_exc())))
    finally:
        _run_cleanups()


def _job_error(exc: bytes | None, trace: str) -> BaseException:
    """The exception a job raised in a worker, with the worker's traceback as its cause.

    ``exc`` comes from this pool's own worker over its pipe (which pickles every message anyway), never from
    disk; it is pickled apart from the message so that an exception that cannot be rebuilt here degrades to a
    RuntimeError carrying the traceback instead of breaking the pipe."""
    try:
        err = pickle.loads(exc) if exc is not None else None
    except Exception:
        err = None
    if not isinstance(err, BaseException):
        err = RuntimeError(f"a job failed in a worker:\n{trace}")
    err.__cause__ = _RemoteTraceback(trace)
    return err


class _Worker:
    """One worker process, its pipe, and the index of the job it is running (``None`` while idle)."""

    def __init__(self, ctx: Any, args: tuple[Any, ...]) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, *args), daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.task: int | None = None
        self.since = time.monotonic()

    def assign(self, k: int, job: Any) -> None:
        self.conn.send(job)
        self.task, self.since = k, time.monotonic()

    def kill(self) -> None:
        """SIGKILLs the worker's whole process group (its game engines too) and reaps it."""
        kill_group(self.process.pid)
        self.process.join()
        self.conn.close()


def _death(process: Any) -> str:
    code = process.exitcode
    return f"died with signal {signal.Signals(-code).name}" if code < 0 else f"died with exit code {code}"


class WorkerPool(Generic[Job, Result]):
    """``workers`` spawned processes, each set up once by ``initializer(*initargs)``, that run ``fn(job)``.

    ``fn`` and ``initializer`` must be importable functions. Jobs must be idempotent (they may run again
    after a crash or hang). ``describe(job)`` names a job in errors. Use as a context manager, or call
    :meth:`close`; after an error the pool is closed.
    """

    def __init__(
        self,
        fn: Callable[[Job], Result],
        workers: int,
        initializer: Callable[..., None] | None = None,
        initargs: tuple[Any, ...] = (),
        timeout: float = 600.0,
        max_retries: int = 2,
        startup_timeout: float = 600.0,
        describe: Callable[[Job], str] = lambda job: f"job {job!r}",
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if not (timeout > 0 and startup_timeout > 0 and max_retries >= 0):
            raise ValueError(f"timeouts must be > 0 and max_retries >= 0, got timeout={timeout}, "
                             f"startup_timeout={startup_timeout}, max_retries={max_retries}")  # fmt: skip
        self.timeout, self.startup_timeout, self.max_retries = timeout, startup_timeout, max_retries
        self.describe = describe
        self.replaced = 0
        self._args = (fn, initializer, initargs)
        self._ctx = mp.get_context("spawn")
        self._workers = [_Worker(self._ctx, self._args) for _ in range(workers)]

    def __enter__(self) -> WorkerPool[Job, Result]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[int, Result]]:
        """Yields ``(k, fn(jobs[k]))`` for every job, in order of completion."""
        if not self._workers:
            raise RuntimeError("this worker pool is closed")
        pending, failures, done, losses = deque(range(len(jobs))), [0] * len(jobs), 0, 0
        try:
            while done < len(jobs):
                for w in self._workers:
                    if w.ready and w.task is None and pending:
                        k = pending.popleft()
                        w.assign(k, jobs[k])
                wait([w.conn for w in self._workers] + [w.process.sentinel for w in self._workers], timeout=1.0)
                for i, w in enumerate(self._workers):
                    finished, lost = self._poll(w)
                    for k, result in finished:
                        done += 1
                        yield k, result
                    if lost is None:
                        continue
                    retry = ""
                    if w.task is not None:
                        failures[w.task] += 1
                        what = self.describe(jobs[w.task])
                        if failures[w.task] > self.max_retries:
                            raise RuntimeError(f"giving up: {what} failed {failures[w.task]} times (its worker "
                                               f"{lost}); {len(jobs) - done} jobs unfinished")  # fmt: skip
                        pending.appendleft(w.task)
                        retry = f" and retrying {what}"
                    elif not w.ready:
                        losses += 1
                        if losses > self.max_retries:
                            raise RuntimeError(f"giving up: workers failed to start {losses} times (the last {lost})")
                    warnings.warn(f"a worker {lost}; replacing it{retry}", stacklevel=2)
                    self._replace(i)
        except BaseException:
            self.close(grace=0.0)
            raise

    def _poll(self, w: _Worker) -> tuple[list[tuple[int, Result]], str | None]:
        """``w``'s finished jobs, and why it must be replaced (died, hung) or None; raises a job's exception."""
        finished: list[tuple[int, Result]] = []
        try:
            while w.conn.poll():
                kind, payload = w.conn.recv()
                if kind == "error":
                    raise _job_error(*payload)
                if kind == "ready":
                    w.ready, w.since = True, time.monotonic()
                else:
                    assert w.task is not None
                    finished.append((w.task, payload))
                    w.task = None
        except (EOFError, OSError):
            w.process.join(timeout=1.0)
        if not w.process.is_alive():
            return finished, _death(w.process)
        elapsed = time.monotonic() - w.since
        if w.task is not None and elapsed > self.timeout:
            return finished, f"hung (no result after {self.timeout:g} s)"
        if not w.ready and elapsed > self.startup_timeout:
            return finished, f"hung (not ready after {self.startup_timeout:g} s)"
        return finished, None

    def _replace(self, i: int) -> None:
        self._workers[i].kill()
        self._workers[i] = _Worker(self._ctx, self._args)
        self.replaced += 1

    def close(self, grace: float = 10.0) -> None:
        """Closes the pipes so that workers close their games and exit; kills any still there after
        ``grace`` seconds, with their process groups."""
        for w in self._workers:
            w.conn.close()
        deadline = time.monotonic() + grace
        for w in self._workers:
            w.process.join(timeout=max(0.0, deadline - time.monotonic()))
            w.kill()  # also the engines of a worker that died: its group outlives it
        self._workers = []


def map_on_workers(
    fn: Callable[[Job], Result],
    jobs: Iterable[Job],
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
    timeout: float = 600.0,
    max_retries: int = 2,
) -> Iterator[Result]:
    """Yields ``fn(job)`` for every job, in order of completion, on a :class:`WorkerPool` of at most
    ``workers`` processes (no more than there are jobs) that is closed at the end."""
    jobs = list(jobs)
    if not jobs:
        return
    with WorkerPool(fn, min(workers, len(jobs)), initializer, initargs, timeout, max_retries) as pool:
        for _, result in pool.run(jobs):
            yield result
