"""Processes a test leaves behind after its worker died.

The executor makes itself a child subreaper (Linux), so when a pytest worker dies, the
processes its tests started are re-parented to the executor instead of to init. After a
worker died or was killed, the executor kills those orphans and collects their exit status.
"""

from __future__ import annotations

import ctypes
import logging
import os

import psutil

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>

# Children this process started on purpose (workers, command shells); every other child is
# an orphan that was re-parented here.
_started: set[int] = set()


def track(pid: int) -> None:
    _started.add(pid)


def untrack(pid: int) -> None:
    _started.discard(pid)


def become_subreaper() -> bool:
    """Make orphaned descendants children of this process; return False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def kill_orphans(*, kill: bool = True) -> list[str]:
    """Reap this process's children that it did not start; describe each one killed.

    With ``kill`` false, only orphans that already exited are collected.
    """
    described = []
    for child in psutil.Process().children():
        if child.pid in _started:
            continue
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                if not kill:
                    continue
                described.append(f"pid {child.pid}: {' '.join(child.cmdline())[:200] or child.name()}")
                child.kill()
            os.waitpid(child.pid, 0)
        except (psutil.Error, ChildProcessError):
            continue
    return described
