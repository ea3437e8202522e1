"""Coverage of the code that runs in Ray worker processes (shard actors, admin tasks).

`[tool.coverage.run] patch = ["subprocess"]` starts measurement in every Python process
the test session starts: the Ray workers inherit COVERAGE_PROCESS_CONFIG through the
raylet. Coverage writes its data at interpreter exit, though, and Ray ends workers
without one: `ray.kill` and `ray.shutdown` end them at the C level (`_Exit`), so no
atexit handler runs and every actor's data would be lost.

`tests/conftest.py` installs `save_periodically` as the session's
`worker_process_setup_hook` when coverage is on (sent by value: `tests` is not on the
workers' path when Ray runs the hook); each worker then writes its data every
SAVE_EVERY_SECONDS from a daemon thread (coverage's save is safe while other threads
run). A worker killed hard loses only the lines it ran for the first time in its last
SAVE_EVERY_SECONDS; pytest-cov combines the files at the end of the session.
"""

from __future__ import annotations

import threading
import time

import coverage

SAVE_EVERY_SECONDS = 1.0


def save_periodically() -> None:
    cov = coverage.Coverage.current()
    if cov is None:  # this worker is not measured
        return
    threading.Thread(target=_save_forever, args=(cov,), name="coverage-save", daemon=True).start()


def _save_forever(cov: coverage.Coverage) -> None:
    while True:
        time.sleep(SAVE_EVERY_SECONDS)
        cov.save()
