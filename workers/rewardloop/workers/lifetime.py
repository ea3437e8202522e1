"""Tying helper processes' lifetime to the process that started them (Linux).

Used by the embedded Redis and by the supervisor of `python -m rewardloop.server`:

- the parent-death signal (``prctl(PR_SET_PDEATHSIG)``): the kernel signals a child when
  its parent dies, even by SIGKILL. Ray starts its own processes the same way
  (``ray._private.services.start_ray_process``). The "parent" is the *thread* that
  forked the child, so it is only set from the main thread;
- sessions: every process started below a session leader stays in its session (Ray's
  workers move to process groups of their own, not out of the session), so the session
  id finds what a crashed leader left behind;
- the child subreaper (``PR_SET_CHILD_SUBREAPER``): orphaned descendants are reparented
  to the supervisor, not to init, so it finds even those that left the session.

>>> session_processes(2**22 + 1)  # no such session
[]
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (AttributeError, OSError):
        return None
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl


# Resolved once, here: a `preexec_fn` runs between fork and exec, where loading a
# library could deadlock on a lock another thread held at the fork.
_prctl = _load_prctl()


def set_parent_death_signal(sig: signal.Signals) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies; False if unsupported."""
    return _prctl is not None and _prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A `preexec_fn` giving the child the parent-death signal `sig`, or None where that is
    impossible (not Linux, or not called from the main thread, whose exit would fire it).

    A child whose parent died between the fork and the prctl kills itself (SIGKILL: a
    handler the parent installed for `sig` would still catch it before the exec).
    """
    if _prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def preexec() -> None:
        set_parent_death_signal(sig)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _live_processes() -> Iterator[tuple[int, int, int]]:
    """(pid, ppid, session id) of every live, non-zombie process, from /proc (none without it)."""
    with contextlib.suppress(FileNotFoundError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_bytes()
            except OSError:  # exited meanwhile
                continue
            # Fields after "(comm)": state ppid pgrp session ...; comm may hold spaces or ")".
            fields = stat[stat.rindex(b")") + 2 :].split()
            if fields[0] != b"Z":
                yield int(entry.name), int(fields[1]), int(fields[3])


def session_processes(sid: int) -> list[int]:
    """Live processes of session `sid`."""
    return [pid for pid, _, session in _live_processes() if session == sid]


def child_processes(ppid: int) -> list[int]:
    """Live children of `ppid`."""
    return [pid for pid, parent, _ in _live_processes() if parent == ppid]


def set_child_subreaper() -> bool:
    """Become the reaper of orphaned descendants (`PR_SET_CHILD_SUBREAPER`): a process whose
    parent dies is reparented to us instead of to init, even if it left our session."""
    return _prctl is not None and _prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def end_processes(find: Callable[[], list[int]], grace: float = 2.0) -> list[int]:
    """SIGTERM the processes `find()` lists, SIGKILL those still listed after `grace` seconds
    (at once when `grace` is 0); returns the pids first found. Zombies count as gone: the
    caller reaps its own children."""
    found = find()
    remaining = found
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        if not remaining:
            break
        if wait <= 0:
            continue
        for pid in remaining:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while remaining and time.monotonic() < deadline:
            time.sleep(0.05)
            remaining = find()
    if remaining:
        log.warning("processes survived SIGKILL: %s", remaining)
    return found
