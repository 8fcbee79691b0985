"""One writer per output folder: an exclusive lock on ``<folder>/.lock``, held for a whole run.

Two runs writing into one folder would delete each other's temporary files and write the same shards. The
lock (``fcntl.flock``, released by the kernel when its holder dies, even by SIGKILL) makes the second run
fail at once with :class:`FolderBusyError` naming the first (its PID, host and command, written into the
lock file). The lock file itself stays: deleting it would let two runs lock two different files.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".lock"


class FolderBusyError(RuntimeError):
    """Another live process holds the lock of the folder."""


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Holds the exclusive lock of ``folder`` (created if missing) for the ``with`` block; raises
    :class:`FolderBusyError` at once if another process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise FolderBusyError(f"{folder} is in use by {holder}; wait for it to finish or use another "
                                  "folder") from None  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()} ({shlex.join(sys.orig_argv)})\n".encode(), 0)
        try:
            yield folder
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


@contextmanager
def exit_if_busy() -> Iterator[None]:
    """For a command line's ``main``: a :class:`FolderBusyError` ends the program with its message alone
    (exit status 1, no traceback)."""
    try:
        yield
    except FolderBusyError as err:
        raise SystemExit(f"error: {err}") from None
