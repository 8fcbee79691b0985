"""The same jobs as :class:`dreamgym.processes.WorkerPool`, as Ray tasks on a cluster (optional extra ``ray``).

:class:`RayPool` has the pool's interface and rules: ``fn(job)`` runs in a Ray worker process that
``initializer(*initargs)`` set up once (the set-up is redone only when another pool's tasks reuse the
worker), results come back in order of completion, and jobs must be idempotent. A task whose worker
process or node dies is retried by Ray itself (``max_retries``); one that gives no result within
``timeout`` seconds (no task finished meanwhile) is cancelled and resubmitted, at most ``max_retries``
times; after that a RuntimeError names the job. A Python exception raised by a job is a bug and is raised
at once, with the worker's traceback.

Every node needs this package installed (``pip install "dreamgym[ray]"``) plus the game packages, and the
files named in the jobs (world model bundles) at the same paths; the repository's script packages
(``agents``, ``training``) are shipped to the workers by :func:`connect`.
"""

from __future__ import annotations

import atexit
import importlib.util
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Generic

from dreamgym.processes import Job, Result, _run_cleanups

SHIPPED = ("agents", "training", "recipes")
"""the repository's script packages, not part of the installed wheel: uploaded to the cluster's workers"""

_SETUP: dict[str, Any] = {}  # in a Ray worker: the key of the pool whose initializer ran here


def import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ImportError("the Ray backend needs the 'ray' extra: pip install 'dreamgym[ray]'") from err
    return ray


def connect(address: str | None) -> Any:
    """The ``ray`` module, connected: to ``address`` (``auto``, ``HOST:PORT``; None starts a local runtime
    unless ``RAY_ADDRESS`` is set), or to the runtime this process already joined (then ``address`` is
    ignored). The script packages of :data:`SHIPPED` found here go to the workers."""
    ray = import_ray()
    if not ray.is_initialized():
        found = (importlib.util.find_spec(name) for name in SHIPPED)
        modules = [str(Path(spec.origin).parent) for spec in found if spec is not None and spec.origin]
        ray.init(address=address, log_to_driver=False, runtime_env={"py_modules": modules})
    return ray


def _run_job(setup: tuple[Callable[[Any], Any], Callable[..., None] | None, tuple[Any, ...], str], job: Any) -> Any:
    """A Ray task: sets this worker up for the pool ``setup`` names (closing the previous pool's games),
    then runs one job."""
    fn, initializer, initargs, key = setup
    if _SETUP.get("key") != key:
        _run_cleanups()
        _SETUP.pop("key", None)
        if not _SETUP.get("atexit"):
            atexit.register(_run_cleanups)
            _SETUP["atexit"] = True
        if initializer is not None:
            initializer(*initargs)
        _SETUP["key"] = key
    return fn(job)


class RayPool(Generic[Job, Result]):
    """Runs ``fn(job)`` as Ray tasks (one CPU each) on the cluster at ``address`` (see :func:`connect`), on
    workers set up by ``initializer(*initargs)``: the interface of :class:`dreamgym.processes.WorkerPool`."""

    def __init__(
        self,
        fn: Callable[[Job], Result],
        address: str | None = None,
        initializer: Callable[..., None] | None = None,
        initargs: tuple[Any, ...] = (),
        timeout: float = 600.0,
        max_retries: int = 2,
        describe: Callable[[Job], str] = lambda job: f"job {job!r}",
    ) -> None:
        if not (timeout > 0 and max_retries >= 0):
            raise ValueError(f"timeout must be > 0 and max_retries >= 0, got {timeout} and {max_retries}")
        self.ray = connect(address)
        self.timeout, self.max_retries, self.describe = timeout, max_retries, describe
        self.replaced = 0  # jobs resubmitted after a hang (Ray's own retries of dead workers are not seen here)
        self._setup = self.ray.put((fn, initializer, initargs, uuid.uuid4().hex))
        self._task = self.ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(_run_job)

    def __enter__(self) -> RayPool[Job, Result]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[int, Result]]:
        """Yields ``(k, fn(jobs[k]))`` for every job, in order of completion."""
        ray, hangs = self.ray, [0] * len(jobs)
        refs = {self._task.remote(self._setup, job): k for k, job in enumerate(jobs)}
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=self.timeout)
                for ref in ready:
                    k = refs.pop(ref)
                    yield k, self._result(ref, jobs[k])
                if ready:
                    continue
                for ref, k in list(refs.items()):  # nothing finished in time: the unfinished count as hung
                    ray.cancel(ref, force=True)
                    hangs[k] += 1
                    if hangs[k] > self.max_retries:
                        raise RuntimeError(f"giving up: {self.describe(jobs[k])} gave no result within "
                                           f"{self.timeout:g} s {hangs[k]} times")  # fmt: skip
                    del refs[ref]
                    refs[self._task.remote(self._setup, jobs[k])] = k
                    self.replaced += 1
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)

    def _result(self, ref: Any, job: Job) -> Result:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as err:  # a Python exception inside the job: a bug
            raise RuntimeError(f"{self.describe(job)} failed: {err}") from err
        except self.ray.exceptions.RayError as err:  # its worker or node died more than max_retries times
            raise RuntimeError(f"giving up: {self.describe(job)} lost its Ray worker {self.max_retries + 1} "
                               f"times ({type(err).__name__})") from err  # fmt: skip

    def close(self) -> None:
        """Leaves the Ray runtime running (it may be shared); ``ray.shutdown()`` ends a local one."""
