"""The closed-loop load generator: long-lived load processes and what each one sends.

The load generator runs in processes of its own (multiprocessing, spawn): on a 2-core box
a client sharing the server's event loop would take its CPU and hide its latency. Each
load process drives a fixed number of workers over one `grpc.aio` channel (or one
redis.asyncio client for the storage baseline); each worker sends its next request as
soon as the previous one is answered (closed loop). Requests answered during the warm-up
are not counted; the measurement window is the same wall-clock interval in every load
process and in the probes the server side reads (CPU, histograms).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
from _workload import CTR, PSEUDONYM_KEY, SURFACE, item_ids, user_ids

RPC_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class LoadSpec:
    """One level of load. `kind`: recommend, record, record_batch (gRPC to `target`) or
    redis_write (the storage baseline: `target` is a Redis URL)."""

    kind: str
    target: str
    concurrency: int
    duration: float
    warmup: float
    users: int = 1000
    user_prefix: str = "user"
    items: int = 100
    n: int = 10
    batch: int = 1
    tag: str = "run"  # event ids are f"{tag}-{process}-{counter}": unique across the run
    start_at: float = 0.0  # time.time() at which every load process starts


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, calls answered in the window
    units: int = 0  # requests (or events) acknowledged in the window
    errors: int = 0  # failed calls, or rejected events of a batch, in the window
    total_units: int = 0  # acknowledged over the whole run, warm-up included
    first_error: str = ""

    def merge(self, other: LoadResult) -> None:
        self.latencies += other.latencies
        self.units += other.units
        self.errors += other.errors
        self.total_units += other.total_units
        self.first_error = self.first_error or other.first_error


Call = Callable[[random.Random], Awaitable[tuple[int, int]]]


async def _open_recommend(spec: LoadSpec) -> tuple[Call, Callable[[], Awaitable[None]]]:
    from rewardloop.v1 import recommender_pb2, recommender_pb2_grpc

    channel = grpc.aio.insecure_channel(spec.target)
    stub = recommender_pb2_grpc.RecommenderStub(channel)
    requests = [
        recommender_pb2.RecommendRequest(user_id=u, surface=SURFACE, n=spec.n)
        for u in user_ids(spec.users, spec.user_prefix)
    ]

    async def call(rng: random.Random) -> tuple[int, int]:
        await stub.Recommend(rng.choice(requests), timeout=RPC_TIMEOUT_SECONDS)
        return 1, 0

    return call, channel.close


class _Events:
    """Feedback events: unique ids, `users` users, CLICK 0/1 on a random item."""

    def __init__(self, spec: LoadSpec, process: int):
        from rewardloop.v1 import feedback_pb2

        self._pb = feedback_pb2
        self.users = user_ids(spec.users, spec.user_prefix)
        self.items = item_ids(spec.items)
        self._prefix = f"{spec.tag}-{process}-"
        self._counter = itertools.count()

    def raw(self, rng: random.Random) -> tuple[str, str, str, float]:
        """(event_id, user_id, item_id, value)."""
        value = 1.0 if rng.random() < CTR else 0.0
        return self._prefix + str(next(self._counter)), rng.choice(self.users), rng.choice(self.items), value

    def proto(self, rng: random.Random) -> Any:
        event_id, user_id, item_id, value = self.raw(rng)
        return self._pb.FeedbackEvent(
            event_id=event_id, user_id=user_id, item_id=item_id, surface=SURFACE,
            signal=self._pb.SIGNAL_CLICK, value=value,
        )  # fmt: skip


async def _open_record(spec: LoadSpec, process: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
    from rewardloop.v1 import feedback_pb2, feedback_pb2_grpc

    channel = grpc.aio.insecure_channel(spec.target)
    stub = feedback_pb2_grpc.FeedbackStub(channel)
    events = _Events(spec, process)

    async def record(rng: random.Random) -> tuple[int, int]:
        await stub.Record(events.proto(rng), timeout=RPC_TIMEOUT_SECONDS)
        return 1, 0

    async def record_batch(rng: random.Random) -> tuple[int, int]:
        request = feedback_pb2.RecordBatchRequest(events=[events.proto(rng) for _ in range(spec.batch)])
        response = await stub.RecordBatch(request, timeout=RPC_TIMEOUT_SECONDS)
        rejected = sum(1 for r in response.results if r.code != 0)
        return spec.batch - rejected, rejected

    return (record if spec.kind == "record" else record_batch), channel.close


async def _open_redis_write(spec: LoadSpec, process: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """The raw durable write: the service's own append (``Store.record_feedback``: idempotency
    check + feedback-log append, one Lua script per event), `batch` events per round trip, without
    gRPC, Ray or the reward engine."""
    from rewardloop.learning.rewards import Signal
    from rewardloop.state.keys import pseudonymize
    from rewardloop.state.records import FeedbackRecord
    from rewardloop.state.store import Store

    store = Store(spec.target)
    events = _Events(spec, process)
    pseudonyms = {u: pseudonymize(u, PSEUDONYM_KEY.encode()) for u in events.users}

    async def write(rng: random.Random) -> tuple[int, int]:
        now_ms = int(time.time() * 1000)
        records = []
        for _ in range(spec.batch):
            event_id, user_id, item_id, value = events.raw(rng)
            records.append(
                FeedbackRecord(pseudonyms[user_id], event_id, SURFACE, item_id, value, Signal.CLICK, value, now_ms)
            )
        await store.record_feedback(records)
        return spec.batch, 0

    return write, store.close


async def _drive(spec: LoadSpec, process: int) -> LoadResult:
    if spec.kind == "recommend":
        call, close = await _open_recommend(spec)
    elif spec.kind in ("record", "record_batch"):
        call, close = await _open_record(spec, process)
    elif spec.kind == "redis_write":
        call, close = await _open_redis_write(spec, process)
    else:
        raise ValueError(f"unknown load kind {spec.kind!r}")
    # Windows are agreed in wall-clock time across processes, timed here with perf_counter.
    offset = time.time() - time.perf_counter()
    await asyncio.sleep(max(0.0, spec.start_at - time.time()))
    measure_from = spec.start_at + spec.warmup - offset
    end = measure_from + spec.duration
    result = LoadResult()

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        while (started := time.perf_counter()) < end:
            try:
                units, errors = await call(rng)
            except Exception as exc:
                units, errors = 0, 1
                result.first_error = result.first_error or f"{type(exc).__name__}: {_short(exc)}"
            answered = time.perf_counter()
            result.total_units += units
            if measure_from <= answered <= end:
                result.latencies.append(answered - started)
                result.units += units
                result.errors += errors

    try:
        await asyncio.gather(*(worker(process * 100_003 + w) for w in range(spec.concurrency)))
    finally:
        await close()
    return result


def _short(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name} {exc.details()}"
    return str(exc)[:200]


def _client_main(conn: Any, process: int) -> None:
    # Ctrl-C reaches the whole process group: the parent decides when load processes end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn.send("ready")
    while True:
        try:
            spec = conn.recv()
        except EOFError:
            return
        if spec is None:
            return
        try:
            result = asyncio.run(_drive(spec, process))
        except Exception as exc:
            result = LoadResult(first_error=f"load process failed: {type(exc).__name__}: {exc}")
        conn.send(result)


def spawn_load_processes(
    target: Callable[[Any, int], None], count: int, name: str, procs: list[Any], conns: list[Any]
) -> None:
    """Start `count` spawn processes running `target(pipe, k)`, appending each to `procs` and its
    end of the pipe to `conns` as it starts (so a failure part way can still close them all)."""
    ctx = multiprocessing.get_context("spawn")
    for k in range(count):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=target, args=(child, k), name=f"{name}-{k}", daemon=True)
        proc.start()
        child.close()
        procs.append(proc)
        conns.append(parent)


def stop_load_processes(procs: list[Any], conns: list[Any]) -> None:
    """Ask each load process to end (None on its pipe), terminate the ones that do not, close the pipes."""
    for conn in conns:
        with contextlib.suppress(OSError):
            conn.send(None)
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
    for conn in conns:
        conn.close()


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` shared among `parts` as evenly as whole numbers allow."""
    return [total // parts + (k < total % parts) for k in range(parts)]


class LoadClients:
    """Long-lived load processes (spawned once, reused for every level)."""

    def __init__(self, processes: int = 1):
        self.processes = processes
        self._procs: list[Any] = []
        self._conns: list[Any] = []

    @property
    def pids(self) -> set[int]:
        return {p.pid for p in self._procs}

    async def __aenter__(self) -> LoadClients:
        try:
            spawn_load_processes(_client_main, self.processes, "bench-load", self._procs, self._conns)
            for conn in self._conns:
                if await asyncio.wait_for(_receive(conn), timeout=120) != "ready":
                    raise RuntimeError("a load process did not start")
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        stop_load_processes(self._procs, self._conns)
        self._procs, self._conns = [], []

    async def run(self, spec: LoadSpec) -> LoadResult:
        shares = split_evenly(spec.concurrency, self.processes)
        busy = [(conn, share) for conn, share in zip(self._conns, shares, strict=True) if share]
        for conn, share in busy:
            conn.send(replace(spec, concurrency=share))
        timeout = spec.start_at - time.time() + spec.warmup + spec.duration + 2 * RPC_TIMEOUT_SECONDS
        merged = LoadResult()
        for conn, _ in busy:
            merged.merge(await asyncio.wait_for(_receive(conn), timeout=timeout))
        return merged


async def _receive(conn: Any) -> Any:
    """conn.recv() without blocking the event loop (the server being measured runs on it)."""
    loop = asyncio.get_running_loop()
    readable = loop.create_future()
    loop.add_reader(conn.fileno(), lambda: readable.done() or readable.set_result(None))
    try:
        await readable
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()
