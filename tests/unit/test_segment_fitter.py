"""The segment fitter fits in the idle scheduling class, on one thread, counts the CPU it takes, and
refits young surfaces sooner."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from redis.exceptions import RedisError
from threadpoolctl import threadpool_info

from rewardloop.workers import segments
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


async def test_a_young_surface_is_refitted_sooner_and_redis_trouble_waits_the_full_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = ServiceConfig.from_dict(
        {"service": {"segment_fit_seconds": 30}, "surfaces": {"feed": {"items": ["a", "b"], "algorithm": "thompson"}}}
    )
    fitter = SegmentFitter(config, "redis://127.0.0.1:1/0")  # never connects: fit() is replaced
    # Rounds of fits: no model yet (too few users), then versions 1, 2, ..., with Redis away once.
    rounds: list[dict[str, int] | Exception] = [{}, {}, {"feed": 1}, {"feed": 2}, RedisError("away"), {"feed": 3}]
    rounds += [{"feed": v} for v in range(4, 9)]
    waits: list[float] = []

    async def fit() -> dict[str, int]:
        outcome = rounds.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if not rounds:
            raise asyncio.CancelledError

    monkeypatch.setattr(fitter, "fit", fit)
    monkeypatch.setattr(segments.asyncio, "sleep", sleep)
    try:
        with pytest.raises(asyncio.CancelledError):
            await fitter._fit_forever()
    finally:
        await fitter.close()
    first, growth = segments.FIRST_FIT_SECONDS, segments.FIT_GROWTH
    # Before each round: first, then as long while there is no model, growing with each version up to
    # the configured period; a round that failed on Redis waits the configured period.
    expected = [first, first, first, first * growth, first * growth**2, 30.0]
    expected += [min(30.0, first * growth**v) for v in range(3, 9)]
    assert waits == pytest.approx(expected)
    assert expected[-1] < 30.0 < first * growth**20  # still young after 8 versions; not after 20


def test_the_fitter_never_takes_more_than_its_duty_of_a_core() -> None:
    mature, young = segments.MAX_DUTY, segments.YOUNG_DUTY
    assert segments.pause(30.0, [40], fit_cpu_seconds=5.0) == pytest.approx(5.0 * (1 - mature) / mature)
    assert segments.pause(30.0, [40, 0], fit_cpu_seconds=5.0) == pytest.approx(5.0 * (1 - young) / young)
    assert segments.pause(30.0, [0], fit_cpu_seconds=0.5) == segments.FIRST_FIT_SECONDS  # small fits: the schedule
    assert segments.pause(30.0, [], fit_cpu_seconds=0.0) == segments.FIRST_FIT_SECONDS
    assert segments.pause(1.0, [0], fit_cpu_seconds=0.0) == 1.0  # a shorter period than the first pause
