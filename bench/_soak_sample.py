"""What the soak reads at the end of each interval: memory per process, Redis, the service's gauges.

Every reading is a flat `{name: number}` mapping, so that a new series (a shard restarted
under a new pid, a memory gauge added to the service later) becomes a new column of the
CSV and a new line of the plot without any change here.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil
import redis

# Counters worth following over a soak besides every gauge: those that say how much is held or dropped.
GAUGE_WORDS = ("bytes", "evict", "users", "entries")
INFO_FIELDS = {
    "used_memory": "redis_used_memory",
    "used_memory_rss": "redis_used_memory_rss",
    "mem_fragmentation_ratio": "redis_frag_ratio",
    "aof_current_size": "redis_aof_bytes",
    "aof_base_size": "redis_aof_base_bytes",
    "aof_rewrite_in_progress": "redis_aof_rewrite_in_progress",
    "aof_rewrite_scheduled": "redis_aof_rewrite_scheduled",
    "rdb_bgsave_in_progress": "redis_bgsave_in_progress",
    "latest_fork_usec": "redis_latest_fork_usec",
}


class ProcessRoles:
    """RSS and CPU per role of the processes under the service's supervisor, and of the load processes.

    Roles: front (the service process: gRPC front + Ray driver), one `shard-<k>` per shard
    actor process (Ray names its workers' process title after the actor class,
    ``ray::HostedShard``), redis (the embedded redis-server), ray (everything else: raylet,
    GCS, dashboard and its agents, log monitor, idle workers, summed), supervisor, load.
    A shard restarted by Ray gets a new process, hence the next number: a new series.
    ``cpu_<role>`` is the CPU (user + system) the role's processes used since the previous reading,
    in cores (1.0 = one core busy the whole time): what competes with the service for the box.
    """

    def __init__(self, supervisor_pid: int, load_pids: Iterable[int]):
        self._supervisor = psutil.Process(supervisor_pid)
        self._load = [psutil.Process(pid) for pid in load_pids]
        self._shards: dict[int, str] = {}  # pid -> shard-<k>, in order of first sight
        self._cpu_seconds: dict[int, float] = {}  # pid -> CPU seconds at the previous reading
        self._read_at = time.monotonic()
        self.usage()  # the baseline of the first interval's CPU

    def usage(self) -> dict[str, float]:
        """``rss_<role>`` (bytes) and ``cpu_<role>`` (cores since the previous reading) per role."""
        totals: dict[str, float] = {"rss_front": 0.0, "rss_redis": 0.0, "rss_ray": 0.0, "rss_supervisor": 0.0}
        cpu: dict[str, float] = {}
        cpu_seconds: dict[int, float] = {}
        processes: list[tuple[str, psutil.Process]] = [("supervisor", self._supervisor)]
        with contextlib.suppress(psutil.Error):
            processes += [(self._role(proc), proc) for proc in self._supervisor.children(recursive=True)]
        processes += [("load", proc) for proc in self._load]
        for role, proc in processes:
            with contextlib.suppress(psutil.Error):
                with proc.oneshot():
                    rss, times = proc.memory_info().rss, proc.cpu_times()
                totals["rss_" + role] = totals.get("rss_" + role, 0.0) + rss
                cpu_seconds[proc.pid] = times.user + times.system
                used = cpu_seconds[proc.pid] - self._cpu_seconds.get(proc.pid, cpu_seconds[proc.pid])
                cpu["cpu_" + role] = cpu.get("cpu_" + role, 0.0) + used
        now = time.monotonic()
        elapsed, self._read_at, self._cpu_seconds = now - self._read_at, now, cpu_seconds
        return {**totals, **{k: v / elapsed for k, v in cpu.items()}} if elapsed > 0 else totals

    def _role(self, proc: psutil.Process) -> str:
        if proc.pid in self._shards:
            return self._shards[proc.pid]
        command = " ".join(proc.cmdline())
        if "HostedShard" in command:
            self._shards[proc.pid] = f"shard-{len(self._shards) + 1}"
            return self._shards[proc.pid]
        if "redis-server" in command or proc.name() == "redis-server":
            return "redis"
        if "rewardloop.server" in command and proc.ppid() == self._supervisor.pid:
            return "front"
        return "ray"

    @property
    def shard_pids(self) -> dict[str, int]:
        return {label: pid for pid, label in self._shards.items()}


def redis_info(client: redis.Redis, data_dir: Path | None) -> dict[str, float]:
    """used_memory(_rss), keys, AOF size, fragmentation, fork and rewrite state; the data dir's size."""
    info: dict[str, Any] = {}
    for section in ("memory", "persistence", "stats"):
        info.update(client.info(section))
    reading = {name: float(info[field]) for field, name in INFO_FIELDS.items() if field in info}
    reading["redis_keys"] = float(client.dbsize())
    if data_dir is not None:
        reading["redis_dir_bytes"] = float(directory_bytes(data_dir))
    return reading


# Redis' latency monitor records every event (fsync, fork, AOF write, expiry cycle ...) that took at
# least this long; the soak turns it on (Redis leaves it off) and reports each event's worst per interval.
LATENCY_THRESHOLD_MS = 20


class RedisStalls:
    """The worst latency of each Redis latency-monitor event per interval, in ms (0 when none),
    as ``redis_stall_ms{event=...}`` columns: what Redis itself waited on, next to the RPCs' p99."""

    def __init__(self, client: redis.Redis):
        self._client = client
        self._since = int(time.time())
        self._events: set[str] = set()
        with contextlib.suppress(redis.RedisError):  # a Redis without CONFIG: no such columns
            client.config_set("latency-monitor-threshold", LATENCY_THRESHOLD_MS)

    def reset(self) -> None:
        """Forget what happened so far: the next reading covers from now on."""
        self._client.execute_command("LATENCY", "RESET")
        self._since = int(time.time())

    def __call__(self) -> dict[str, float]:
        # Redis dates events to the second: an event of the second a reading was taken in counts
        # in the interval that follows.
        since, self._since = self._since, int(time.time())
        worst: dict[str, float] = dict.fromkeys(self._events, 0.0)
        for event, *_ in self._client.execute_command("LATENCY", "LATEST"):
            name = event.decode() if isinstance(event, bytes) else str(event)
            self._events.add(name)
            history = self._client.execute_command("LATENCY", "HISTORY", name)
            worst[name] = max([float(ms) for at, ms in history if since <= int(at) < self._since], default=0.0)
        return {f"redis_stall_ms{{event={name}}}": ms for name, ms in worst.items()}


def directory_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def _followed(name: str, kind: str) -> bool:
    return kind == "gauge" or (kind == "counter" and any(w in name for w in GAUGE_WORDS))


def service_gauges(metrics_url: str) -> dict[str, float]:
    """The front's `rewardloop_*` gauges (levels: what a soak follows), and its counters whose names
    say what is held or dropped (GAUGE_WORDS), one series per label set; empty when the metrics
    endpoint does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    reading = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("rewardloop_") or not _followed(family.name, family.type):
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            reading[f"svc_{sample.name}" + (f"{{{labels}}}" if labels else "")] = float(sample.value)
    return reading
