"""Measuring one level of load: the window every process agrees on, and the probes read at its ends.

A probe is any callable returning cumulative counters; ``measure`` reads every probe at the
start and the end of the measured window and keeps the deltas, so a level's figures cover the
same wall-clock interval as its latencies (CPU time by role, Prometheus histograms, a timed method).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import psutil
from _load import LoadClients, LoadResult, LoadSpec

# Time the load processes get to receive a spec before the run starts.
START_DELAY_SECONDS = 0.3

# Roles of the processes whose CPU time is accounted, in display order; "other" is every
# process outside this benchmark's tree (on a shared box, a sign the figures are disturbed).
ROLES = ("server", "shards", "redis", "ray", "load", "other")


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


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]
