"""Shared parts of the benchmarks: the closed-loop load generator, latency statistics,
per-process CPU accounting, the environment and table printing.

The load generator runs in processes of its own (multiprocessing, spawn): on a 2-core box
a client sharing the server's event loop would take its CPU and hide its latency. Each
load process drives a fixed number of workers over one `grpc.aio` channel (or one
redis.asyncio client for the storage baseline); each worker sends its next request as
soon as the previous one is answered (closed loop). Requests answered during the warm-up
are not counted; the measurement window is the same wall-clock interval in every load
process and in the probes the server side reads (CPU, histograms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import itertools
import json
import logging
import math
import multiprocessing
import os
import platform
import pstats
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import psutil

from rewardloop.workers.config import ServiceConfig

SURFACE = "bench"
PSEUDONYM_KEY = "bench-pseudonym-key"
# Load generators are no humans: lift the burst limit (rewards/quality.py) that would flag them.
NO_BURST_LIMIT = {"burst_per_second": 1_000_000, "burst_per_minute": 1_000_000}
RPC_TIMEOUT_SECONDS = 60.0
# Time the load processes get to receive a spec before the run starts.
START_DELAY_SECONDS = 0.3
CTR = 0.2  # share of CLICK events with value 1

# Roles of the processes whose CPU time is accounted, in display order; "other" is every
# process outside this benchmark's tree (on a shared box, a sign the figures are disturbed).
ROLES = ("server", "shards", "redis", "ray", "load", "other")


# --- what the benchmarks send ----------------------------------------------------------------


def item_ids(count: int) -> list[str]:
    return [f"item-{i:03d}" for i in range(count)]


def user_ids(count: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(count)]


def service_config(algorithm: str, items: int, shards: int) -> ServiceConfig:
    """One surface, `items` items, no experiments: the configuration both benchmarks serve."""
    return ServiceConfig.from_dict(
        {
            "service": {"shards": shards, "seed": 1, "pseudonym_key": PSEUDONYM_KEY, "quality": NO_BURST_LIMIT},
            "surfaces": {SURFACE: {"algorithm": algorithm, "items": item_ids(items)}},
        }
    )


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


# --- the load process ------------------------------------------------------------------------

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
    """The raw durable write: per event SET NX (idempotency marker) + XADD (feedback log),
    pipelined `batch` events per round trip, with the service's key names and fields."""
    import redis.asyncio as aioredis

    from rewardloop.learning.rewards import Signal
    from rewardloop.state.keys import UserKeys, pseudonymize
    from rewardloop.state.store import DEDUP_TTL_SECONDS, FeedbackRecord

    client = aioredis.Redis.from_url(spec.target, max_connections=spec.concurrency + 4)
    events = _Events(spec, process)
    keys = {u: UserKeys(pseudonymize(u, PSEUDONYM_KEY.encode())) for u in events.users}

    def log_entry(pseudonym: str, event_id: str, item_id: str, value: float, now_ms: int) -> dict[str, Any]:
        record = FeedbackRecord(pseudonym, event_id, SURFACE, item_id, value, Signal.CLICK, value, now_ms, "")
        f = record.fields()
        return dict(zip(f[::2], f[1::2], strict=True))

    async def write(rng: random.Random) -> tuple[int, int]:
        now_ms = int(time.time() * 1000)
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(spec.batch):
                event_id, user_id, item_id, value = events.raw(rng)
                user = keys[user_id]
                pipe.set(user.event(event_id), b"1", nx=True, ex=DEDUP_TTL_SECONDS)
                pipe.xadd(user.feedback_log, log_entry(user.pseudonym, event_id, item_id, value, now_ms))
            await pipe.execute()
        return spec.batch, 0

    return write, client.aclose


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
        ctx = multiprocessing.get_context("spawn")
        try:
            for k in range(self.processes):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_client_main, args=(child, k), name=f"bench-load-{k}", daemon=True)
                proc.start()
                child.close()
                self._procs.append(proc)
                self._conns.append(parent)
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
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []

    async def run(self, spec: LoadSpec) -> LoadResult:
        shares = [spec.concurrency // self.processes + (k < spec.concurrency % self.processes)
                  for k in range(self.processes)]  # fmt: skip
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


# --- measuring one level ---------------------------------------------------------------------

Probe = Callable[[], Mapping[str, float]]


@dataclass
class Level:
    """What one level measured: the load generator's view and deltas of server-side probes."""

    spec: LoadSpec
    result: LoadResult
    probes: dict[str, float]

    @property
    def rate(self) -> float:
        return self.result.units / self.spec.duration

    def latency_ms(self, q: float) -> float:
        return percentile(self.result.latencies, q) * 1000

    def cpu_percent(self, role: str) -> float:
        return 100 * self.probes.get(f"cpu.{role}", 0.0) / self.spec.duration

    def to_json(self) -> dict[str, Any]:
        return {
            "rate_per_s": self.rate,
            "p50_ms": self.latency_ms(50),
            "p99_ms": self.latency_ms(99),
            "units": self.result.units,
            "errors": self.result.errors,
            "probes": self.probes,
        }

    def mean(self, name: str) -> float:
        """Mean of a probe exposing `name.sum` and `name.count` deltas (nan if none)."""
        count = self.probes.get(f"{name}.count", 0.0)
        return self.probes.get(f"{name}.sum", 0.0) / count if count else math.nan


async def measure(clients: LoadClients, spec: LoadSpec, probes: Sequence[Probe] = ()) -> Level:
    """Run one level; read the probes at the start and at the end of its window."""
    spec = replace(spec, start_at=time.time() + START_DELAY_SECONDS)
    loop = asyncio.get_running_loop()
    to_loop_time = loop.time() - time.time()
    readings: list[dict[str, float]] = []

    def read() -> None:
        readings.append({k: v for probe in probes for k, v in probe().items()})

    window_start = spec.start_at + spec.warmup + to_loop_time
    timers = [loop.call_at(window_start, read), loop.call_at(window_start + spec.duration, read)]
    try:
        result = await clients.run(spec)
    finally:
        for timer in timers:
            timer.cancel()
    deltas: dict[str, float] = {}
    if len(readings) == 2:
        before, after = readings
        deltas = {k: max(0.0, after[k] - before.get(k, 0.0)) for k in after}
    return Level(spec, result, deltas)


class CpuTime:
    """Probe: CPU seconds used so far by this process and all its descendants, by role
    (server = this process; load = the load processes; shards = Ray shard actors; redis;
    ray = the rest of Ray: raylet, GCS, agents, idle workers), and by everything else on
    the machine (other = busy CPU time of the whole machine minus ours)."""

    def __init__(self, load_pids: Iterable[int]):
        self._me = psutil.Process()
        self._load = set(load_pids)
        self._roles: dict[int, str] = {}

    def __call__(self) -> dict[str, float]:
        totals = dict.fromkeys((f"cpu.{r}" for r in ROLES), 0.0)
        for proc in (self._me, *self._me.children(recursive=True)):
            try:
                role = self._roles.get(proc.pid) or self._role(proc)
                times = proc.cpu_times()
            except psutil.Error:
                continue
            totals[f"cpu.{role}"] += times.user + times.system
        machine = psutil.cpu_times()
        busy = machine.user + machine.nice + machine.system + machine.irq + machine.softirq + machine.steal
        totals["cpu.other"] = busy - sum(totals.values())
        return totals

    def _role(self, proc: psutil.Process) -> str:
        if proc.pid == self._me.pid:
            return "server"
        if proc.pid in self._load:
            role = "load"
        else:
            command = " ".join(proc.cmdline())
            if "redis-server" in command:
                role = "redis"
            elif "HostedShard" in command:
                role = "shards"
            else:
                return "ray"  # not cached: an idle Ray worker may become a shard
        self._roles[proc.pid] = role
        return role


def histogram_probe(name: str, labels: Mapping[str, str], key: str) -> Probe:
    """Probe: `key.sum` and `key.count` of a Prometheus histogram in this process."""
    from prometheus_client import REGISTRY

    def read() -> dict[str, float]:
        total = REGISTRY.get_sample_value(f"{name}_sum", dict(labels)) or 0.0
        count = REGISTRY.get_sample_value(f"{name}_count", dict(labels)) or 0.0
        return {f"{key}.sum": total, f"{key}.count": count}

    return read


class Stopwatch:
    """Wraps an async method of an object to time each await; a probe of `key.sum/count`.

    Used on the service's router to split the front's time into waiting on the shard
    (actor call + shard work) and the rest; the service's code is left untouched.
    """

    def __init__(self, owner: Any, method: str, key: str):
        self.key = key
        self.total = 0.0
        self.count = 0
        inner = getattr(owner, method)

        async def timed(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return await inner(*args)
            finally:
                self.total += time.perf_counter() - started
                self.count += 1

        setattr(owner, method, timed)

    def __call__(self) -> dict[str, float]:
        return {f"{self.key}.sum": self.total, f"{self.key}.count": float(self.count)}


# --- statistics and printing -----------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def fmt(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Plain-text table; the first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        padded = [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))]
        return "  ".join(padded)

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


# Levels during which processes outside the benchmark used more than this (% of one core).
DISTURBED_PERCENT = 20.0


def warn_if_disturbed(levels: Sequence[Level]) -> None:
    """Say so when other processes on the machine competed for the CPU during some levels."""
    disturbed = [lv for lv in levels if lv.cpu_percent("other") > DISTURBED_PERCENT]
    if disturbed:
        worst = max(lv.cpu_percent("other") for lv in disturbed)
        print(
            f"\nWARNING: during {len(disturbed)} of {len(levels)} levels, other processes on this machine"
            f" used > {DISTURBED_PERCENT:.0f}% of a core (up to {worst:.0f}%, column 'cpu other'):"
            " those figures are disturbed; rerun on a quiet machine"
        )


def cpu_cells(level: Level) -> list[str]:
    return [fmt(level.cpu_percent(r), 0) for r in ROLES]


def environment() -> dict[str, str]:
    import google.protobuf
    import numpy
    import ray
    import redis

    model = ""
    try:
        with open("/proc/cpuinfo") as info:
            model = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), "")
    except OSError:
        pass
    return {
        "code": _code_version(),
        "cores": f"{os.cpu_count()} logical ({len(os.sched_getaffinity(0))} usable) {model}".strip(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "ray": ray.__version__,
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "redis-py": redis.__version__,
        "numpy": numpy.__version__,
    }


def _code_version() -> str:
    """Where rewardloop is imported from, and its git revision (the tree may have edits)."""
    import rewardloop.workers

    root = Path(rewardloop.workers.__file__).resolve().parents[3]

    def git(*args: str) -> str:
        command = ["git", "-C", str(root), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=5).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        changed = git("status", "--porcelain", "--untracked-files=no", "--", "server", "workers").splitlines()
    except (OSError, subprocess.SubprocessError):
        head, changed = "", []
    if not head:
        return f"rewardloop from {root} (not a git checkout)"
    edits = f", {len(changed)} modified file(s) in server/ and workers/" if changed else ", clean"
    return f"rewardloop from {root} (git {head}{edits})"


def print_profile(profiler: cProfile.Profile, what: str, lines: int = 25) -> None:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(lines)
    print(f"\ncProfile of this process (gRPC front + Ray driver) during {what}, by own time")
    print("(main thread only; profiling slows the front: a --profile run's figures are not its speed)")
    print(out.getvalue())


def print_environment(extra: Mapping[str, str]) -> None:
    print("environment")
    for key, value in {**environment(), **extra}.items():
        print(f"  {key:<14} {value}")
    print(flush=True)


def argument_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options both benchmarks take."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds before each level")
    parser.add_argument("--users", type=int, default=1000, help="distinct user ids")
    parser.add_argument("--items", type=int, default=100, help="items in the surface's catalogue")
    parser.add_argument("--clients", type=int, default=1, help="load generator processes")
    parser.add_argument("--profile", action="store_true", help="cProfile this process during service levels")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return parser


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated integers >= 1."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def start_ray(stack: contextlib.ExitStack | contextlib.AsyncExitStack) -> None:
    """A local Ray as the tests start it (2 CPUs, no dashboard), shut down with `stack`."""
    import ray

    ray.init(
        address="local", num_cpus=2, include_dashboard=False,
        logging_level=logging.WARNING, log_to_driver=False,
    )  # fmt: skip
    stack.callback(ray.shutdown)


def write_json(path: str, args: argparse.Namespace, document: Mapping[str, Any]) -> None:
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    document = {"environment": environment(), "settings": settings, **document}
    with open(path, "w") as out:
        json.dump(document, out, indent=2, default=str)
    print(f"\nwrote {path}")


def run_main(main: Callable[[], Awaitable[object]]) -> None:
    """asyncio.run(main()); Ctrl-C cancels it, everything started is stopped, exit 130."""
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        progress("interrupted: load processes, servers, Ray and redis-server were stopped")
        sys.exit(130)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def progress_level(label: str, level: Level, unit: str = "rps") -> None:
    """One progress line per measured level."""
    result = level.result
    progress(
        f"  {label:<32} {level.spec.concurrency:>4} in flight: {level.rate:9,.0f} {unit}"
        f"  p50 {fmt(level.latency_ms(50))} ms  p99 {fmt(level.latency_ms(99))} ms  errors {result.errors}"
        + (f"  ({result.first_error})" if result.first_error else "")
    )
