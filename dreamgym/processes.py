"""Worker processes that never leave a game engine behind.

VizDoom runs its engine as a child process of the Python process that made the env. If a worker dies
without closing its env, that engine is orphaned and keeps a core busy. Workers therefore (1) lead their
own process group, so a parent that must kill a hung worker kills its engine too (:func:`kill_group`),
and (2) get SIGTERM when their parent dies and close their games before exiting.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

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
