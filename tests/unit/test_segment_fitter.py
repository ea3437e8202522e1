"""The segment fitter fits in the idle scheduling class, on one thread, and counts the CPU it takes."""

from __future__ import annotations

import os
import threading
import time

from threadpoolctl import threadpool_info

from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.segments import SegmentFitter


def _priority() -> tuple[int, int]:
    """This thread's scheduling class and niceness."""
    tid = threading.get_native_id()
    return os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)


def _busy(seconds: float) -> float:
    started = time.thread_time()
    while time.thread_time() - started < seconds:
        pass
    return seconds


async def test_fits_run_idle_class_single_threaded_and_are_counted() -> None:
    config = ServiceConfig.from_dict({"surfaces": {"feed": {"items": ["a", "b"], "algorithm": "thompson"}}})
    fitter = SegmentFitter(config, "redis://127.0.0.1:1/0")  # never connects
    try:
        before = _priority()
        assert await fitter._in_background(_priority) == (os.SCHED_IDLE, 19)
        assert _priority() == before  # the actor's own thread keeps its priority
        pools = await fitter._in_background(threadpool_info)
        assert pools and all(pool["num_threads"] == 1 for pool in pools)  # numpy's BLAS at least
        assert await fitter._in_background(lambda: _busy(0.05)) == 0.05
        # The busy call's 50 ms, and nearly nothing else: measured on the fitting thread alone.
        assert 0.05 <= fitter._cpu_seconds < 0.5
        assert {t.name.split("_")[0] for t in threading.enumerate()} >= {"segment-fit"}
    finally:
        await fitter.close()
