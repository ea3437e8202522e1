"""The soak's load: Recommend -> Record pairs, closed loop to calibrate, open loop to soak.

A *pair* is what a client of the service does for one page view: `Recommend` for a user,
then `Record` of a CLICK (value 1 with probability `ctr`, else 0) on one of the items shown,
carrying the Recommend's `decision_id` and surface, so that feedback joins its decision and
every part of the service that keeps per-decision state is exercised.

The open loop sends pairs on a fixed schedule (`rate` pairs per second, evenly spaced), not
when earlier ones are answered: a slow service cannot slow the load down, and latency is
measured from the time a request was *due* (the schedule for Recommend, the Recommend's
answer for Record), so a stall shows as latency instead of hiding as fewer requests
(coordinated omission). Pairs in flight are capped: a pair due while `max_in_flight` are
under way is not sent and counts as shed, so a stalled service cannot grow the client's
memory without bound.

Load runs in processes of its own (multiprocessing, spawn), as in `_load.py`: on a 2-core
box the client must not share a process with what it measures. Each process reports its
figures once per interval, sent from a thread so that a slow reader cannot delay the schedule.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
from _load import spawn_load_processes, split_evenly, stop_load_processes

RPC_TIMEOUT_SECONDS = 10.0
RPCS = ("Recommend", "Record")
SHED = "shed"  # the key of pairs not sent because too many were in flight


@dataclass(frozen=True)
class PairSpec:
    """What one pair sends: to whom, on which surface, and how often the user clicks."""

    target: str
    surface: str
    users: int
    n: int
    ctr: float
    seed: int
    tag: str  # event ids are f"{tag}-{process}-{counter}": unique across the run


@dataclass(frozen=True)
class CalibrationSpec:
    """Closed loop: `in_flight` pair loops; pairs answered in [warmup, warmup + windows * duration)
    count, in `windows` windows of `duration` s each."""

    pairs: PairSpec
    in_flight: int
    warmup: float
    duration: float
    start_at: float = 0.0  # time.time()
    windows: int = 1


@dataclass(frozen=True)
class OpenLoopSpec:
    """Open loop: `rate` pairs/s from `start_at` (time.time()) for `duration` s, reported per `interval`."""

    pairs: PairSpec
    rate: float
    duration: float
    interval: float
    max_in_flight: int
    start_at: float = 0.0
    phase: float = 0.0  # share of one period this process's schedule is shifted by, in [0, 1)


@dataclass
class Tally:
    """What the load saw during one interval (or a calibration window), per RPC."""

    index: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: {rpc: [] for rpc in RPCS})  # seconds
    ok: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RPCS, 0))
    errors: dict[str, int] = field(default_factory=dict)  # "Recommend UNAVAILABLE" -> count; SHED -> pairs
    in_flight: int = 0  # pairs under way at the end of the interval
    first_error: str = ""

    def merge(self, other: Tally) -> None:
        for rpc in RPCS:
            self.latencies[rpc] += other.latencies[rpc]
            self.ok[rpc] += other.ok[rpc]
        for key, count in other.errors.items():
            self.errors[key] = self.errors.get(key, 0) + count
        self.in_flight += other.in_flight
        self.first_error = self.first_error or other.first_error

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


class _Pairs:
    """Sends pairs over one channel; the result of each RPC goes to the tally `tally_for` picks."""

    def __init__(self, spec: PairSpec, process: int):
        from rewardloop.v1 import feedback_pb2, feedback_pb2_grpc, recommender_pb2, recommender_pb2_grpc

        self._fb = feedback_pb2
        self._spec = spec
        self._channel = grpc.aio.insecure_channel(spec.target)
        self._recommender = recommender_pb2_grpc.RecommenderStub(self._channel)
        self._feedback = feedback_pb2_grpc.FeedbackStub(self._channel)
        self._requests = [
            recommender_pb2.RecommendRequest(user_id=f"soak-user-{u:06d}", surface=spec.surface, n=spec.n)
            for u in range(spec.users)
        ]
        self._event_prefix = f"{spec.tag}-{process}-"
        self._counter = itertools.count()
        self.rng = random.Random(spec.seed * 1_000_003 + process)

    async def send(self, due: float, tally_for: Callable[[], Tally]) -> bool:
        """One pair, Recommend due at `due` (perf_counter); True when both were answered."""
        request = self.rng.choice(self._requests)
        recommend = self._recommender.Recommend(request, timeout=RPC_TIMEOUT_SECONDS)
        response = await self._timed("Recommend", due, recommend, tally_for)
        if response is None:
            return False
        if not response.items:
            tally = tally_for()
            tally.errors["Recommend no items"] = tally.errors.get("Recommend no items", 0) + 1
            return False
        event = self._fb.FeedbackEvent(
            event_id=self._event_prefix + str(next(self._counter)),
            user_id=request.user_id,
            decision_id=response.decision_id,
            item_id=self.rng.choice(response.items).item_id,
            surface=request.surface,
            signal=self._fb.SIGNAL_CLICK,
            value=1.0 if self.rng.random() < self._spec.ctr else 0.0,
        )
        # Record is due when the Recommend is answered: a real client sends it then.
        due = time.perf_counter()
        record = self._feedback.Record(event, timeout=RPC_TIMEOUT_SECONDS)
        return await self._timed("Record", due, record, tally_for) is not None

    @staticmethod
    async def _timed(rpc: str, due: float, call: Awaitable[Any], tally_for: Callable[[], Tally]) -> Any:
        try:
            response = await call
        except grpc.aio.AioRpcError as exc:
            tally = tally_for()
            key = f"{rpc} {exc.code().name}"
            tally.errors[key] = tally.errors.get(key, 0) + 1
            tally.first_error = tally.first_error or f"{key}: {(exc.details() or '')[:200]}"
            return None
        tally = tally_for()
        tally.latencies[rpc].append(time.perf_counter() - due)
        tally.ok[rpc] += 1
        return response

    async def close(self) -> None:
        await self._channel.close()


async def calibrate(spec: CalibrationSpec, process: int) -> list[Tally]:
    """Closed loop: each of `in_flight` loops sends its next pair when the last one is answered. One
    tally per window, by completion time."""
    pairs = _Pairs(spec.pairs, process)
    offset = time.time() - time.perf_counter()
    await asyncio.sleep(max(0.0, spec.start_at - time.time()))
    counted_from = spec.start_at + spec.warmup - offset
    end = counted_from + spec.windows * spec.duration
    windows, ignored = [Tally(index=k) for k in range(spec.windows)], Tally()

    def tally_for() -> Tally:
        now = time.perf_counter()
        if not counted_from <= now < end:
            return ignored
        return windows[min(int((now - counted_from) // spec.duration), spec.windows - 1)]

    async def loop() -> None:
        while (due := time.perf_counter()) < end:
            await pairs.send(due, tally_for)

    try:
        await asyncio.gather(*(loop() for _ in range(spec.in_flight)))
    finally:
        await pairs.close()
    return windows


class _Intervals:
    """The tally of the interval running now, by completion time; finished ones go to `report`."""

    def __init__(self, start: float, interval: float, count: int, report: Callable[[Tally], Awaitable[None]]):
        self._start, self._interval, self._count = start, interval, count
        self._report = report
        self.current = Tally(index=0)

    def tally(self) -> Tally:
        return self.current

    async def roll_until(self, now: float, in_flight: int) -> None:
        """Report every interval that ended before `now` (the last one is reported by `finish`)."""
        while self.current.index < self._count - 1 and now >= self._start + (self.current.index + 1) * self._interval:
            self.current.in_flight = in_flight
            finished, self.current = self.current, Tally(index=self.current.index + 1)
            await self._report(finished)

    async def finish(self, in_flight: int) -> None:
        self.current.in_flight = in_flight
        await self._report(self.current)


async def open_loop(spec: OpenLoopSpec, process: int, report: Callable[[Tally], Awaitable[None]]) -> None:
    """Send pairs on the schedule; report each interval's tally as it ends."""
    pairs = _Pairs(spec.pairs, process)
    offset = time.time() - time.perf_counter()
    start = spec.start_at - offset
    period = 1.0 / spec.rate
    total = math.floor(spec.duration * spec.rate)
    count = max(1, math.ceil(spec.duration / spec.interval - 1e-9))
    intervals = _Intervals(start, spec.interval, count, report)
    running: set[asyncio.Task[bool]] = set()
    sent = 0
    await asyncio.sleep(max(0.0, spec.start_at - time.time()))
    try:
        while sent < total:
            due = start + (sent + spec.phase) * period
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
                now = time.perf_counter()
            await intervals.roll_until(now, len(running))
            # Everything due by now goes out at once: a late wake-up shows as latency, not as fewer pairs.
            while sent < total and start + (sent + spec.phase) * period <= now:
                _dispatch(pairs, start + (sent + spec.phase) * period, intervals, running, spec.max_in_flight)
                sent += 1
        await _drain(running, intervals, start + spec.duration)
        await intervals.finish(len(running))
    finally:
        for task in running:
            task.cancel()
        await pairs.close()


def _dispatch(pairs: _Pairs, due: float, intervals: _Intervals, running: set[asyncio.Task[bool]], cap: int) -> None:
    if len(running) >= cap:
        tally = intervals.tally()
        tally.errors[SHED] = tally.errors.get(SHED, 0) + 1
        return
    task = asyncio.create_task(pairs.send(due, intervals.tally))
    running.add(task)
    task.add_done_callback(running.discard)


async def _drain(running: set[asyncio.Task[bool]], intervals: _Intervals, end: float) -> None:
    """Let the pairs under way finish (they count in the last interval), rolling intervals meanwhile."""
    deadline = time.perf_counter() + 2 * RPC_TIMEOUT_SECONDS + 1
    while time.perf_counter() < end or (running and time.perf_counter() < deadline):
        await asyncio.sleep(0.05)
        await intervals.roll_until(time.perf_counter(), len(running))


def _load_main(conn: Any, process: int) -> None:
    # Ctrl-C reaches the whole process group: the parent decides when load processes end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn.send("ready")
    while (spec := _receive_or_none(conn)) is not None:
        try:
            if isinstance(spec, CalibrationSpec):
                conn.send(asyncio.run(calibrate(spec, process)))
            else:

                async def report(tally: Tally) -> None:
                    await asyncio.to_thread(conn.send, tally)

                asyncio.run(open_loop(spec, process, report))
                conn.send(None)  # the run is over
        except Exception as exc:
            conn.send(RuntimeError(f"load process {process} failed: {type(exc).__name__}: {exc}"))


def _receive_or_none(conn: Any) -> Any:
    try:
        return conn.recv()
    except EOFError:
        return None


class SoakClients:
    """Long-lived load processes; `calibrate` and `start_open_loop` share a rate among them."""

    def __init__(self, processes: int):
        self.processes = processes
        self._procs: list[Any] = []
        self._conns: list[Any] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def __enter__(self) -> SoakClients:
        try:
            spawn_load_processes(_load_main, self.processes, "soak-load", self._procs, self._conns)
            for conn in self._conns:
                if not conn.poll(120) or conn.recv() != "ready":
                    raise RuntimeError("a load process did not start")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        stop_load_processes(self._procs, self._conns)
        self._procs, self._conns = [], []

    def calibrate(self, spec: CalibrationSpec) -> list[Tally]:
        """Run the closed loop in every process (in_flight shared among them); its windows, each
        merged over the processes."""
        spec = replace(spec, start_at=time.time() + 0.5)
        shares = split_evenly(spec.in_flight, self.processes)
        for conn, share in zip(self._conns, shares, strict=True):
            conn.send(replace(spec, in_flight=max(1, share)))
        merged = [Tally(index=k) for k in range(spec.windows)]
        timeout = spec.warmup + spec.windows * spec.duration + 2 * RPC_TIMEOUT_SECONDS + 30
        for conn in self._conns:
            for window, part in zip(merged, _expect(conn, timeout, list), strict=True):
                window.merge(part)
        return merged

    def start_open_loop(self, spec: OpenLoopSpec) -> None:
        """Start the schedule in every process, each with rate/processes, their pairs interleaved."""
        for k, conn in enumerate(self._conns):
            conn.send(replace(spec, rate=spec.rate / self.processes, phase=k / self.processes))

    def interval(self, timeout: float) -> Tally | None:
        """The next interval's tally merged over the processes; None once the run is over."""
        reports = [_expect(conn, timeout, (Tally, type(None))) for conn in self._conns]
        if any(r is None for r in reports):
            return None
        merged = Tally(index=reports[0].index)
        for report in reports:
            merged.merge(report)
        return merged


def _expect(conn: Any, timeout: float, kind: type | tuple[type, ...]) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError(f"no report from a load process within {timeout:.0f} s")
    message = conn.recv()
    if isinstance(message, Exception):
        raise message
    if not isinstance(message, kind):
        raise RuntimeError(f"unexpected message from a load process: {message!r}")
    return message
