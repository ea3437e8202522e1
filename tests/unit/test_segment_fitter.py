"""The segment fitter fits in the idle scheduling class, on one thread, counts the CPU it takes, and
refits young surfaces sooner."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

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


def _surfaces(*names: str) -> ServiceConfig:
    surfaces = {name: {"items": ["a", "b"], "algorithm": "thompson"} for name in names}
    return ServiceConfig.from_dict({"service": {"segment_fit_seconds": 30}, "surfaces": surfaces})


async def _drive(
    fitter: SegmentFitter, monkeypatch: pytest.MonkeyPatch, rounds: list[Callable[[set[str]], dict[str, int]]]
) -> list[tuple[float, set[str]]]:
    """Runs the fitter's loop over scripted rounds of fits on a simulated clock (sleeping advances it);
    returns when each round ran and which surfaces it was to look at."""
    clock = [1000.0]
    looked: list[tuple[float, set[str]]] = []

    async def fit(only: set[str]) -> dict[str, int]:
        looked.append((clock[0], set(only)))
        return rounds.pop(0)(set(only))

    async def sleep(seconds: float) -> None:
        if not rounds:
            raise asyncio.CancelledError
        clock[0] += seconds

    monkeypatch.setattr(fitter, "fit", fit)
    monkeypatch.setattr(segments.asyncio, "sleep", sleep)
    monkeypatch.setattr(segments, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    try:
        with pytest.raises(asyncio.CancelledError):
            await fitter._fit_forever()
    finally:
        await fitter.close()
    return looked


def _versions(versions: dict[str, int]) -> Callable[[set[str]], dict[str, int]]:
    return lambda only: {name: v for name, v in versions.items() if name in only}


def _redis_away(only: set[str]) -> dict[str, int]:
    raise RedisError("away")


async def test_a_young_surface_is_refitted_sooner_and_redis_trouble_waits_the_full_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fitter = SegmentFitter(_surfaces("feed"), "redis://127.0.0.1:1/0")  # never connects: fit() is replaced
    # No model yet (too few users), then versions 1, 2, ..., with Redis away once.
    rounds = [_versions({}), _versions({}), *(_versions({"feed": v}) for v in (1, 2))]
    rounds += [_redis_away, *(_versions({"feed": v}) for v in range(3, 9))]
    looked = await _drive(fitter, monkeypatch, rounds)
    waits = [b[0] - a[0] for a, b in itertools.pairwise(looked)]
    first, growth = segments.FIRST_FIT_SECONDS, segments.FIT_GROWTH
    assert looked[0][0] == 1000.0 + first
    # First, then as long while there is no model, growing with each version up to the configured
    # period; after a round that failed on Redis, the configured period.
    expected = [first, first, first * growth, first * growth**2, 30.0]
    expected += [min(30.0, first * growth**v) for v in range(3, 8)]
    assert waits == pytest.approx(expected)
    assert expected[-1] < 30.0 < first * growth**40  # still young after 7 versions; not after 40


async def test_each_surface_keeps_its_own_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    fitter = SegmentFitter(_surfaces("old", "new"), "redis://127.0.0.1:1/0")
    young = iter(range(1, 100))
    # A surface fitted for long (version 40, read from Redis) beside one that just started.
    rounds = [lambda only: {"old": 40, "new": next(young)} if "new" in only else {"old": 40}] * 20
    looked = await _drive(fitter, monkeypatch, rounds)
    times = {name: [t for t, only in looked if name in only] for name in ("old", "new")}
    gaps = {name: [b - a for a, b in itertools.pairwise(t)] for name, t in times.items()}
    assert gaps["old"] and all(gap == pytest.approx(30.0) for gap in gaps["old"])  # not with the young one
    first_period = {name: sum(t < 1000.0 + 30.0 for t in ts) for name, ts in times.items()}
    # The new one at 2 s, then after each of its versions v = 1, 2, ... its own pause (9 looks by 30 s).
    due, young_looks = segments.FIRST_FIT_SECONDS, []
    for v in itertools.count(1):
        if due >= 30.0:
            break
        young_looks.append(due)
        due += segments.refit_after(30.0, v)
    assert first_period == {"old": 1, "new": len(young_looks)} and len(young_looks) >= 6
    assert gaps["new"] == sorted(gaps["new"])
    assert gaps["new"][0] == pytest.approx(segments.FIRST_FIT_SECONDS * segments.FIT_GROWTH)


def test_the_fitter_never_takes_more_than_its_duty_of_a_core() -> None:
    mature, young = segments.MAX_DUTY, segments.YOUNG_DUTY
    assert segments.rest(5.0, young=False) == pytest.approx(5.0 * (1 - mature) / mature)
    assert segments.rest(5.0, young=True) == pytest.approx(5.0 * (1 - young) / young)
    assert segments.refit_after(1.0, 0) == 1.0  # a period shorter than the first pause
