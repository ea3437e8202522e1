"""Feedback ingestion over gRPC with durable ack, next to the raw durable write, same run.

Service: an embedded redis-server (AOF; appendfsync as --fsync says, `always` being what
the service runs with), a local Ray, and `Service` (gRPC front in this process + shard
actors). (a) `Feedback.Record`, one event per RPC, at --record-levels in flight;
(b) `Feedback.RecordBatch` with --batch-sizes events per RPC at --batch-levels in flight.
An answered RPC means its events are durable (Redis has fsynced them under `always`).

Baseline, against the same Redis: the durable write itself, with no gRPC and no Ray: the
service's own append (Store.record_feedback: per event one Lua script, idempotency check +
feedback-log append), pipelined in batches of the RPC's size (1 for Record) by as many
concurrent writers as RPCs in flight (on other users' keys).

Load: closed loop from a separate process (multiprocessing, spawn); events have unique
ids, go to --users users on surface "bench", signal CLICK with value 0/1.

    .venv/bin/python bench/feedback.py                         # appendfsync always
    .venv/bin/python bench/feedback.py --fsync always,everysec # both, to see fsync's cost
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from _cli import argument_parser, int_list, run_main, start_ray
from _load import LoadClients, LoadSpec
from _measure import ROLES, CpuTime, Level, Stopwatch, histogram_probe, measure, percentile
from _report import (
    cpu_cells,
    fmt,
    print_environment,
    print_profile,
    progress,
    progress_level,
    table,
    warn_if_disturbed,
    write_json,
)
from _workload import service_config, user_ids

from rewardloop.server.app import Service
from rewardloop.state.keys import UserKeys, pseudonymize
from rewardloop.workers.redis_server import EmbeddedRedis

FSYNC_MODES = ("always", "everysec", "no")
# Targets from the issues, in events per second durably acknowledged.
TARGET_RECORD_EVENTS = 2000.0
TARGET_BATCH_EVENTS = 5000.0


def _fsync_list(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in FSYNC_MODES]
    if not modes or bad:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(FSYNC_MODES)}")
    return modes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__)
    parser.add_argument("--record-levels", type=int_list, default=[32, 128], help="Record RPCs in flight")
    parser.add_argument("--batch-sizes", type=int_list, default=[100, 500], help="events per RecordBatch")
    parser.add_argument("--batch-levels", type=int_list, default=[1, 4, 16], help="RecordBatches in flight")
    parser.add_argument("--fsync", type=_fsync_list, default=["always"], help="Redis appendfsync mode(s)")
    parser.add_argument("--shards", type=int, default=2, help="service shard actors")
    args = parser.parse_args(argv)
    if max(args.batch_sizes) > 1000:
        parser.error("--batch-sizes: RecordBatch takes at most 1000 events")
    return args


@dataclass(frozen=True)
class Case:
    rpc: str  # Record | RecordBatch
    batch: int
    in_flight: int


@dataclass
class Row:
    fsync: str
    case: Case
    baseline: Level
    service: Level


def plan(args: argparse.Namespace) -> list[Case]:
    return [Case("Record", 1, c) for c in args.record_levels] + [
        Case("RecordBatch", b, c) for b in args.batch_sizes for c in args.batch_levels
    ]


def disk_fsync_ms(directory: Path, samples: int = 200) -> tuple[float, float]:
    """p50 and p99 of a 256-byte append + fsync in `directory`: the floor of one durable write."""
    path = directory / f"fsync-probe-{uuid.uuid4().hex}"
    timings = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(samples):
            started = time.perf_counter()
            os.write(fd, b"x" * 256)
            os.fsync(fd)
            timings.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return percentile(timings, 50) * 1000, percentile(timings, 99) * 1000


async def logged_events(admin: aioredis.Redis, users: list[str], key: str) -> int:
    """Events in these users' feedback logs."""
    async with admin.pipeline(transaction=False) as pipe:
        for user in users:
            pipe.xlen(UserKeys(pseudonymize(user, key.encode())).feedback_log)
        lengths = await pipe.execute()
    return int(sum(lengths))


async def run_case(
    clients: LoadClients,
    service: Service,
    redis_url: str,
    case: Case,
    args: argparse.Namespace,
    probes: tuple[CpuTime, Stopwatch],
    profiler: cProfile.Profile | None,
) -> tuple[Level, Level]:
    cpu, shard_wait = probes
    kind = "record" if case.rpc == "Record" else "record_batch"
    common = {"duration": args.duration, "warmup": args.warmup, "users": args.users, "items": args.items}
    service_probes = [
        cpu,
        histogram_probe("rewardloop_shard_batch_size", {"kind": "feedback"}, "batch"),
        histogram_probe("rewardloop_rpc_duration_seconds", {"method": case.rpc, "code": "OK"}, "handler"),
        shard_wait,
    ]
    tag = uuid.uuid4().hex[:8]
    spec = LoadSpec(kind, service.target, case.in_flight, batch=case.batch, tag=f"svc-{tag}", **common)
    if profiler:
        profiler.enable()
    try:
        service_level = await measure(clients, spec, service_probes)
    finally:
        if profiler:
            profiler.disable()
    label = f"service {case.rpc} x{case.batch}"
    progress_level(label, service_level, "ev/s")
    spec = LoadSpec(
        "redis_write", redis_url, case.in_flight, batch=case.batch, tag=f"base-{tag}",
        user_prefix="baseline-user", **common,
    )  # fmt: skip
    baseline_level = await measure(clients, spec, [cpu])
    progress_level(f"baseline redis x{case.batch}", baseline_level, "ev/s")
    return baseline_level, service_level


async def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    profiler = cProfile.Profile() if args.profile else None
    async with contextlib.AsyncExitStack() as stack:
        progress("starting: load process(es), redis-server, local Ray, service ...")
        clients = await stack.enter_async_context(LoadClients(args.clients))
        redis_server = stack.enter_context(EmbeddedRedis(fsync=args.fsync[0]))
        start_ray(stack)
        admin = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        stack.push_async_callback(admin.aclose)
        config = service_config("ucb1", args.items, args.shards)
        prefix = f"bench-fb-{uuid.uuid4().hex[:6]}"
        service = Service(config, redis_server.url, "127.0.0.1:0", shard_prefix=prefix)
        # No snapshot flush on stop: this Redis is thrown away (and Ctrl-C stops it first).
        stack.push_async_callback(service.stop, 1.0, False)
        await service.start()
        assert service.router is not None
        probes = (CpuTime(clients.pids), Stopwatch(service.router, "feedback", "shard_wait"))
        p50, p99 = disk_fsync_ms(redis_server.data_dir)
        info = await admin.info("server")
        print_environment(
            {
                "redis-server": f"{info['redis_version']} (embedded, AOF on, in {redis_server.data_dir})",
                "disk fsync": f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (256 B append + fsync in Redis' data dir)",
                "load": f"{args.clients} separate process(es) (multiprocessing spawn), closed loop",
                "workload": f"{args.users} users, {args.items} items, CLICK 0/1, unique event ids, "
                f"{args.shards} shards, {args.warmup:g} s warm-up + {args.duration:g} s per level",
            }
        )
        acknowledged = 0
        for mode in args.fsync:
            await admin.config_set("appendfsync", mode)
            actual = (await admin.config_get("appendfsync"))["appendfsync"]
            progress(f"appendfsync {actual}")
            for case in plan(args):
                pair = await run_case(clients, service, redis_server.url, case, args, probes, profiler)
                baseline, served = pair
                acknowledged += served.result.total_units
                rows.append(Row(actual, case, baseline, served))
        logged = await logged_events(admin, user_ids(args.users), config.pseudonym_key)
    report(rows, args, acknowledged, logged)
    if profiler:
        print_profile(profiler, "the service levels")
    return rows


def report(rows: list[Row], args: argparse.Namespace, acknowledged: int, logged: int) -> None:
    print("\nFeedback over gRPC with durable ack vs the raw durable write (Redis pipeline, no gRPC/Ray)")
    print("(events/s acknowledged; p50/p99 in ms of one RPC, or of one pipeline round trip for the baseline)")
    print(
        table(
            ["fsync", "rpc", "events/rpc", "in flight", "base ev/s", "base p50", "base p99",
             "svc ev/s", "svc p50", "svc p99", "ratio", "errors"],
            [
                [r.fsync, r.case.rpc, r.case.batch, r.case.in_flight,
                 fmt(r.baseline.rate, 0), fmt(r.baseline.latency_ms(50)), fmt(r.baseline.latency_ms(99)),
                 fmt(r.service.rate, 0), fmt(r.service.latency_ms(50)), fmt(r.service.latency_ms(99)),
                 f"{r.service.rate / r.baseline.rate:.2f}x" if r.baseline.rate else "-",
                 r.baseline.result.errors + r.service.result.errors]
                for r in rows
            ],
        )
    )  # fmt: skip
    print("(ratio = service/baseline events per second)")
    print("\nWhere the time goes, service: CPU % of one core per process group during the window")
    print("(200% = both cores; other = processes outside this benchmark), mean events per front->shard")
    print("call, mean front handler time per RPC (ms)")
    print("and mean wait per event on its shard (ms: batcher queue + actor call + durable write + learning)")
    print(
        table(
            ["fsync", "rpc", "events/rpc", "in flight", *(f"cpu {r}" for r in ROLES),
             "shard batch", "handler", "shard wait"],
            [
                [r.fsync, r.case.rpc, r.case.batch, r.case.in_flight, *cpu_cells(r.service),
                 fmt(r.service.mean("batch"), 1), fmt(1000 * r.service.mean("handler")),
                 fmt(1000 * r.service.mean("shard_wait"))]
                for r in rows
            ],
        )
    )  # fmt: skip
    print("\nBaseline CPU % of one core")
    print(
        table(
            ["fsync", "events/pipeline", "in flight", "cpu redis", "cpu load", "cpu other"],
            [[r.fsync, r.case.batch, r.case.in_flight, fmt(r.baseline.cpu_percent("redis"), 0),
              fmt(r.baseline.cpu_percent("load"), 0), fmt(r.baseline.cpu_percent("other"), 0)] for r in rows],
        )
    )  # fmt: skip
    warn_if_disturbed([lv for r in rows for lv in (r.baseline, r.service)])
    verdict = "OK" if logged == acknowledged else "MISMATCH"
    print(
        f"\nDurability check: {acknowledged:,} events acknowledged by the service over the run, "
        f"{logged:,} in the users' feedback logs in Redis: {verdict}"
    )
    print_targets(rows)
    if args.json:
        results = [
            {"fsync": r.fsync, "rpc": r.case.rpc, "events_per_rpc": r.case.batch,
             "in_flight": r.case.in_flight, "baseline": r.baseline.to_json(), "service": r.service.to_json()}
            for r in rows
        ]  # fmt: skip
        write_json(args.json, args, {"results": results, "acknowledged": acknowledged, "logged": logged})


def print_targets(rows: list[Row]) -> None:
    print(
        f"\nTargets (issues): Record >= {TARGET_RECORD_EVENTS:,.0f} events/s durably acknowledged; "
        f"RecordBatch >= {TARGET_BATCH_EVENTS:,.0f} events/s"
    )
    for fsync in dict.fromkeys(r.fsync for r in rows):
        for rpc, target in (("Record", TARGET_RECORD_EVENTS), ("RecordBatch", TARGET_BATCH_EVENTS)):
            candidates = [r for r in rows if r.fsync == fsync and r.case.rpc == rpc]
            if not candidates:
                continue
            best = max(candidates, key=lambda r: r.service.rate)
            verdict = "(met)" if best.service.rate >= target else "(MISSED)"
            print(
                f"  appendfsync {fsync}: best {rpc} {fmt(best.service.rate, 0)} events/s "
                f"({best.case.batch} events/rpc, {best.case.in_flight} in flight) {verdict}"
            )


def main() -> None:
    args = parse_args()
    run_main(lambda: run(args))


if __name__ == "__main__":
    main()
