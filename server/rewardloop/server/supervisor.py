"""The small process that `python -m rewardloop.server` leaves in the terminal's group.

`ray.init()` starts the GCS, the raylet, the dashboard, monitor and log-monitor processes
as children in the caller's process group (Ray 2.60, ``services.start_ray_process``: only
SIGINT is blocked in them), and the embedded redis-server used to live there too. A
SIGTERM to the group (docker, systemd, a Kubernetes pod, a test harness) therefore
reached Redis and the raylet at the same moment as the front: the shards' final flush
had nothing left to write to, and the front waited 30 s for it.

So the real service runs in a session of its own, where no terminal or group signal
reaches it or anything it starts, and this process, which imports neither Ray nor gRPC:

- turns the first SIGINT, SIGTERM or SIGHUP into one SIGTERM to the service, which
  drains the front, flushes the shards and then stops Ray and Redis, in that order;
- kills the service's whole session at a second signal, or when the service has not
  stopped STOP_DEADLINE_SECONDS after the first;
- when the service exits, for whatever reason (kill -9 included), ends what it left
  behind: its session, and orphans that left the session, which the kernel hands to us
  (child subreaper);
- if it is itself killed, even by SIGKILL, the kernel sends the service SIGTERM (its
  parent-death signal), and the service stops gracefully.

Like tini, it blocks the signals it handles and takes them synchronously with
`sigtimedwait`, so no signal can slip in between checks.

A session keeps out signals sent to a process group, not those sent to a cgroup: under
systemd use ``KillMode=mixed`` (SIGTERM to the main process only, SIGKILL to the rest
at the timeout); the default ``control-group`` sends SIGTERM to Redis and Ray as well.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Sequence

from rewardloop.workers.lifetime import child_processes, end_processes, session_processes, set_child_subreaper

log = logging.getLogger("rewardloop.supervisor")

# Set in the service's environment: tells `python -m rewardloop.server` it is the
# supervised service, and who its parent must be.
SUPERVISOR_ENV = "REWARDLOOP_SUPERVISOR_PID"
# After the first stop signal: the front's drain (5 s), the shards' flush (at most 10 s),
# then Ray and Redis take a few seconds; past this, something hangs.
STOP_DEADLINE_SECONDS = 30.0


def supervise(argv: Sequence[str]) -> int:
    """Run `python -m rewardloop.server argv` supervised; returns its exit code (128 + N
    when signal N ended it)."""
    # A signal ignored where we were started (`nohup`, a shell's background job) stays ignored.
    stop_signals = {s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if signal.getsignal(s) != signal.SIG_IGN}
    watched = {*stop_signals, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    set_child_subreaper()
    command = [sys.executable, "-m", "rewardloop.server", *argv]
    pid = os.posix_spawn(
        sys.executable,
        command,
        {**os.environ, SUPERVISOR_ENV: str(os.getpid())},
        file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
        setsid=True,
        setsigmask=(),
        setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
    )
    deadline = math.inf  # of the stop, once asked for
    while (code := _exit_code(pid)) is None:
        info = signal.sigtimedwait(watched, max(0.0, min(1.0, deadline - time.monotonic())))
        if info is not None and info.si_signo in stop_signals:
            if deadline == math.inf:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + STOP_DEADLINE_SECONDS
            else:
                log.warning("%s again: killing the service now", signal.Signals(info.si_signo).name)
                _kill(pid)
        elif info is not None and info.si_signo == signal.SIGCHLD:
            _reap_orphans(pid)
        elif time.monotonic() >= deadline:
            log.warning("the service has not stopped %.0f s after SIGTERM: killing it", STOP_DEADLINE_SECONDS)
            _kill(pid)
            deadline = math.inf
    if code != 0:
        log.warning("the service exited with %d", code)
    leftovers = end_processes(lambda: _descendants(pid))
    if leftovers:
        log.warning("ended %d processes the service left behind: %s", len(leftovers), leftovers)
    os.waitpid(pid, 0)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:  # orphans we adopted
            pass
    return code


def _exit_code(pid: int) -> int | None:
    """The exit code of child `pid` once it has exited, else None. The child is not reaped,
    so its pid (the session id of everything it started) cannot be reused meanwhile."""
    result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if result is None or result.si_pid == 0:
        return None
    return result.si_status if result.si_code == os.CLD_EXITED else 128 + result.si_status


def _reap_orphans(service: int) -> None:
    """Collect the exited children other than the service: orphans we adopted as subreaper."""
    while (result := os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)) is not None:
        if result.si_pid in (0, service):
            return
        os.waitpid(result.si_pid, 0)


def _descendants(service: int) -> list[int]:
    """Everything the service started that still runs: its session, and adopted orphans."""
    return sorted({*session_processes(service), *child_processes(os.getpid())})


def _kill(service: int) -> None:
    end_processes(lambda: _descendants(service), grace=0)
