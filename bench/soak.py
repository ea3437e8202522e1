"""Soak: does the service's memory level off under steady load? (issue 10, "runs for weeks").

Starts the service as production does (`python -m rewardloop.server`: supervisor, local Ray,
embedded Redis with AOF, on 127.0.0.1 and a free port, data in the output directory),
measures the most the mixed workload gets through closed loop (unless --rate is given),
then sends --fraction of that, open loop, for --minutes after a --warmup. The workload is
pairs: Recommend for one of --users users, then Record of a CLICK on one of the items shown,
carrying the Recommend's decision_id and surface (1 Recommend : 1 Record).

Every --interval seconds it prints a line and keeps a sample: RSS of the front, of each
shard actor, of redis-server, of Ray's own processes (summed) and of the load generator;
Redis used_memory, used_memory_rss, keys, AOF size, fragmentation and fork state; the
service's memory gauges (rewardloop_* metrics naming bytes/evict/users/entries); per RPC
the requests answered, failed (by gRPC status) and p50/p99/max latency measured from the
scheduled send. At the end: a summary per series, the verdict against issue 10's criteria
(0 errors; front, shard and Redis memory growth over the last third <= 2%; no interval after
the warm-up with p99 > 250 ms), and in --out: samples.csv, soak.json, soak.png, server.log.

    .venv/bin/python bench/soak.py --config bench/soak.toml          # the reference (make soak): 30 min at 0.7 x max
    .venv/bin/python bench/soak.py --minutes 2 --warmup 20 --interval 10 --rate 100   # a smoke run
    .venv/bin/python bench/soak.py --config retention.toml --minutes 120
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import redis
from _measure import percentile
from _report import print_environment, progress
from _soak_load import RPCS, CalibrationSpec, OpenLoopSpec, PairSpec, SoakClients, Tally
from _soak_plot import plot
from _soak_report import MB, Row, header, interval_row, line, print_summary, shard_series, summary, write_files
from _soak_sample import ProcessRoles, RedisStalls, redis_info, service_gauges
from _soak_stack import Endpoints, ServerProcess
from capacity import predict

from rewardloop.learning.surface import longest_window_ms
from rewardloop.workers.config import ServiceConfig

ROOT = Path(__file__).resolve().parents[1]
CTR = 0.1
# How far the capacity model (bench/capacity.py) may be from the memory measured (issue 10).
MODEL_TOLERANCE_PERCENT = 20.0
# The calibration's default warm-up: the config's longest horizon (reward window, log retention,
# event ids, stored ledger entries) and this much more, unless that takes longer than
# MAX_STEADY_WARMUP_SECONDS.
HORIZON_MARGIN_SECONDS = 15.0
MAX_STEADY_WARMUP_SECONDS = 600.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--minutes", type=float, default=30.0, help="measured minutes after the warm-up (default 30)")
    add("--warmup", type=float, default=60.0, help="seconds of load before the criteria apply (default 60)")
    add("--interval", type=float, default=15.0, help="seconds per sample and printed line (default 15)")
    add("--users", type=int, default=5000, help="distinct user ids (default 5000)")
    add("--rate", type=float, help="RPC/s to send (Recommend + Record); default: --fraction of the calibrated max")
    add("--fraction", type=float, default=0.7, help="share of the calibrated max to send (default 0.7)")
    add("--calibrate-seconds", type=float, default=20.0, help="seconds of each calibration window (default 20)")
    add(
        "--calibrate-windows", type=int, default=3,
        help="closed-loop windows measured one after another; the calibrated max is their median (default 3: "
        "one 20-s window gave 434, 446 and 650 RPC/s in three runs of the same command)",
    )  # fmt: skip
    add(
        "--calibrate-warmup", type=float,
        help="seconds of closed loop before the calibration measures (default: the config's longest horizon "
        f"(reward window, log retention, event ids, stored ledger entries) + {HORIZON_MARGIN_SECONDS:g} s when "
        f"that is at most {MAX_STEADY_WARMUP_SECONDS:g} s, so that it measures the steady state: windows "
        "closing, logs compacted, hashes pruned; else 5 s)",
    )  # fmt: skip
    add("--calibrate-in-flight", type=int, default=32, help="pairs in flight during calibration (default 32)")
    add("--max-in-flight", type=int, default=1000, help="pairs in flight beyond which due pairs are shed")
    add("--config", help="service TOML config, passed to the server (default: the server's default)")
    add("--redis-url", help="use this Redis instead of the server's embedded one")
    add("--surface", default="home_feed", help="surface to recommend on (default home_feed, in the default config)")
    add("--n", type=int, default=10, help="items per Recommend (default 10)")
    add("--clients", type=int, default=1, help="load generator processes (default 1)")
    add("--seed", type=int, default=1, help="seed of the users, items and clicks the load draws")
    add("--out", type=Path, help="output directory (default var/soak-<time>/)")
    args = parser.parse_args(argv)
    _check(parser, args)
    return args


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.minutes <= 0 or args.warmup < 0 or args.interval <= 0:
        parser.error("--minutes and --interval must be > 0, --warmup >= 0")
    if not 0 < args.fraction <= 1:
        parser.error(f"--fraction must be in (0, 1], got {args.fraction}")
    if args.rate is not None and args.rate <= 0:
        parser.error(f"--rate must be > 0, got {args.rate}")
    if args.users < 1 or args.n < 1 or args.clients < 1 or args.max_in_flight < 1:
        parser.error("--users, --n, --clients and --max-in-flight must be >= 1")
    if args.config and not Path(args.config).is_file():
        parser.error(f"--config: no such file {args.config}")
    if args.calibrate_warmup is not None and args.calibrate_warmup < 0:
        parser.error(f"--calibrate-warmup must be >= 0, got {args.calibrate_warmup}")
    if args.calibrate_windows < 1 or args.calibrate_seconds <= 0:
        parser.error("--calibrate-windows must be >= 1 and --calibrate-seconds > 0")


def calibration_warmup(args: argparse.Namespace) -> tuple[float, bool]:
    """Seconds of closed loop before the calibration measures, and whether it then measures the steady
    state (``--calibrate-warmup``): every horizon reached, so windows close, logs are compacted and the
    per-user hashes pruned while it measures. Measured on bench/soak.toml: 388 RPC/s after the reward
    window only, 292 after every horizon; the soak at 70% of the first ran at 90% of the second."""
    config = ServiceConfig.load(args.config)
    horizon_s = max(
        longest_window_ms(config.surfaces.values()) / 1000, config.retention.logs_seconds,
        config.retention.dedup_seconds, config.settled_ms / 1000,
    )  # fmt: skip
    if args.calibrate_warmup is not None:
        return args.calibrate_warmup, args.calibrate_warmup >= horizon_s
    if horizon_s + HORIZON_MARGIN_SECONDS <= MAX_STEADY_WARMUP_SECONDS:
        return horizon_s + HORIZON_MARGIN_SECONDS, True
    return 5.0, False


def intervals(args: argparse.Namespace) -> int:
    """Warm-up + measured time in whole intervals (rounded up)."""
    total: float = args.warmup + args.minutes * 60
    return math.ceil(total / float(args.interval) - 1e-9)


def calibrate(clients: SoakClients, pairs: PairSpec, args: argparse.Namespace) -> float:
    """The mixed workload's closed-loop maximum, in RPC/s answered: the median of the windows'; printed."""
    warmup, steady = calibration_warmup(args)
    seconds, count = args.calibrate_seconds, args.calibrate_windows
    in_flight = args.calibrate_in_flight
    progress(f"calibrating: closed loop, {in_flight} pairs in flight, {count} x {seconds:g} s after {warmup:g} s")
    spec = CalibrationSpec(pairs, in_flight, warmup=warmup, duration=seconds, windows=count)
    windows = clients.calibrate(spec)
    rates = [sum(w.ok.values()) / seconds for w in windows]
    max_rps = float(statistics.median(rates))
    closes = "steady state: every horizon reached" if steady else "BEFORE the steady state: overstates it"
    print(f"calibration   closed loop, {in_flight} pairs in flight, {count} x {seconds:g} s after {warmup:g} s")
    print(f"              ({closes}):")
    shown = ", ".join(f"{r:,.0f}" for r in rates)
    print(f"              windows {shown} RPC/s; spread {(max(rates) - min(rates)) / max_rps:.0%} of the median")
    merged = Tally()
    for window in windows:
        merged.merge(window)
    print(f"              max {max_rps:,.0f} RPC/s ({max_rps / 2:,.0f} pairs/s, the median), {_latencies(merged)}")
    print(f"              errors {merged.error_count}" + (f" ({merged.first_error})" if merged.first_error else ""))
    if max_rps == 0:
        raise RuntimeError(f"calibration: nothing was answered ({merged.first_error or 'no error either'})")
    return max_rps


def _latencies(tally: Tally) -> str:
    parts = []
    for rpc in RPCS:
        p50, p99 = (percentile(tally.latencies[rpc], q) * 1000 for q in (50, 99))
        parts.append(f"{rpc} p50 {p50:.1f} ms p99 {p99:.1f} ms")
    return ", ".join(parts)


class Sampler:
    """Everything read at the end of an interval, as one flat mapping."""

    def __init__(self, server: ServerProcess, endpoints: Endpoints, load_pids: list[int]):
        self.roles = ProcessRoles(server.pid, load_pids)
        self._endpoints = endpoints
        self._redis = redis.Redis.from_url(endpoints.redis_url, socket_timeout=5)
        self._stalls = RedisStalls(self._redis)
        self.redis_failures = 0

    def __call__(self) -> dict[str, float]:
        reading: dict[str, float] = {"loadavg_1m": os.getloadavg()[0], **self.roles.usage()}
        try:
            reading.update(redis_info(self._redis, self._endpoints.redis_dir))
            reading.update(self._stalls())
        except redis.RedisError:
            self.redis_failures += 1  # a gap in the Redis series; the load's errors say the rest
        reading.update(service_gauges(self._endpoints.metrics_url))
        return reading

    def restart(self) -> None:
        """Let the next reading's per-interval figures (CPU, Redis stalls) start now, not at the last one."""
        self.roles.usage()
        with contextlib.suppress(redis.RedisError):
            self._stalls.reset()

    def close(self) -> None:
        self._redis.close()


@dataclass
class Measured:
    """What a run has measured so far: kept by the caller, so that a run cut short (Ctrl-C, a
    failure) still gets its summary, files and plot."""

    rows: list[Row] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def soak(
    clients: SoakClients,
    server: ServerProcess,
    sampler: Sampler,
    pairs: PairSpec,
    rate: float,
    args: argparse.Namespace,
    rows: list[Row],
) -> None:
    """The open-loop run; appends one row per interval to `rows`, printed as it ends."""
    count = intervals(args)
    spec = OpenLoopSpec(
        pairs, rate=rate / 2, duration=count * args.interval, interval=args.interval,
        max_in_flight=args.max_in_flight, start_at=time.time() + 1.0,
    )  # fmt: skip
    print(f"\nsoak          {rate:,.0f} RPC/s ({rate / 2:,.0f} pairs/s) open loop for {count} x {args.interval:g} s")
    print(header(), flush=True)
    sampler.restart()  # the first interval's CPU and Redis stalls are its own, not the calibration's
    clients.start_open_loop(spec)
    while (tally := clients.interval(timeout=args.interval + 60)) is not None:
        end_s = (tally.index + 1) * args.interval
        rows.append(interval_row(tally, sampler(), end_s, args.interval, args.warmup))
        print(line(rows[-1]), flush=True)
        if server.exited is not None:
            raise RuntimeError(f"the service exited with {server.exited} (see {server.log_path})")


def run(args: argparse.Namespace, out: Path, measured: Measured) -> None:
    """Start everything, calibrate, soak; stops everything it started, whatever happens."""
    tag = uuid.uuid4().hex[:8]
    facts = measured.facts
    with contextlib.ExitStack() as stack:
        progress("starting: load process(es), then the service (python -m rewardloop.server) ...")
        clients = stack.enter_context(SoakClients(args.clients))
        server = ServerProcess(out / "data", out / "server.log", args.config, args.redis_url)
        stack.callback(_stop_server, server)
        endpoints = server.start()
        sampler = Sampler(server, endpoints, clients.pids)
        stack.callback(sampler.close)
        facts["empty"] = sampler()  # before any load: what the capacity model's bytes come on top of
        pairs = PairSpec(endpoints.target, args.surface, args.users, args.n, CTR, args.seed, f"soak-{tag}")
        print_environment(_described(args, server, endpoints))
        rate: float = args.rate
        if args.rate is None:
            facts["calibrated_max_rps"] = calibrate(clients, replace(pairs, tag=f"cal-{tag}"), args)
            rate = args.fraction * facts["calibrated_max_rps"]
        facts.update(rate_rps=rate, endpoints=vars(endpoints))
        try:
            soak(clients, server, sampler, pairs, rate, args, measured.rows)
        finally:
            facts.update(shard_pids=sampler.roles.shard_pids, redis_sample_failures=sampler.redis_failures)


def _stop_server(server: ServerProcess) -> None:
    progress("stopping the service (SIGTERM to its supervisor: drain, flush, then Ray and Redis) ...")
    started = time.monotonic()
    code = server.stop()
    progress(f"the service exited with {code} after {time.monotonic() - started:.1f} s")


def _described(args: argparse.Namespace, server: ServerProcess, endpoints: Endpoints) -> dict[str, str]:
    return {
        "service": f"{' '.join(server.command()[1:])} (supervisor pid {server.pid})",
        "serving": f"gRPC {endpoints.target}, {endpoints.redis_url}, metrics {endpoints.metrics_url}",
        "config": args.config or "the server's default (REWARDLOOP_CONFIG or default_config.toml)",
        "load": f"{args.clients} process(es) (multiprocessing spawn), grpc.aio, open loop, "
        f"<= {args.max_in_flight} pairs in flight",
        "workload": f"pairs of Recommend (surface {args.surface}, n={args.n}) + Record (CLICK, CTR {CTR:g}, "
        f"decision_id), {args.users:,} users, seed {args.seed}",
        "schedule": f"{args.warmup:g} s warm-up + {args.minutes:g} min, sampled every {args.interval:g} s",
    }


def finish(args: argparse.Namespace, out: Path, rows: list[Row], facts: dict[str, Any]) -> bool:
    """Summary, verdict, files and plot of what was measured; True when the verdict passes."""
    result = summary(rows)
    passed = print_summary(rows, result, model_verdicts(args, rows, facts))
    if facts.get("redis_sample_failures"):
        print(f"  ({facts['redis_sample_failures']} Redis samples failed: gaps in the Redis series)")
    if args.minutes < 30:
        print(f"  (a {args.minutes:g}-minute run: the memory verdict of issue 10 needs the 30-minute reference run)")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_files(out, rows, {"settings": settings, **facts, "summary": result, "passed": passed})
    rate = facts.get("rate_rps") or 0.0
    title = f"rewardloop soak: {rate:,.0f} RPC/s, {args.users:,} users, {len(rows)} x {args.interval:g} s"
    plot(rows, out / "soak.png", title, args.warmup)
    print(f"\nwrote {out}/samples.csv, soak.json, soak.png (service log: server.log)")
    return passed


def model_verdicts(args: argparse.Namespace, rows: list[Row], facts: dict[str, Any]) -> list[tuple[bool, str]]:
    """The capacity model (bench/capacity.py) against the last third of the run: Redis used_memory
    and the shards' RSS, each above its value before any load; within MODEL_TOLERANCE_PERCENT. (The
    model's shard memory is its peak over the run, calibration included: RSS keeps its high-water mark.)"""
    empty, rate = facts.get("empty"), facts.get("rate_rps")
    last = [row for row in rows if not row["warmup"]]
    last = last[len(last) * 2 // 3 :]
    if not empty or not rate or not last:
        return []
    config = ServiceConfig.load(args.config)
    # The calibration sent the same users' pairs first, closed loop at its maximum.
    calibrated = facts.get("calibrated_max_rps")
    calibration_s = calibration_warmup(args)[0] + args.calibrate_windows * args.calibrate_seconds
    before = (calibration_s / 60, calibrated / 2) if calibrated else None
    minutes = args.warmup / 60 + args.minutes
    predicted = predict(config, args.users, rate / 2, minutes=minutes, slate=args.n, before=before)
    facts["model"] = {"redis": predicted.redis, "shards": predicted.shards}
    print("\ncapacity model (bench/capacity.py) for this run\n" + predicted.show())

    def above_empty(keys: list[str]) -> float:
        return sum(sum(row[k] for row in last) / len(last) - empty.get(k, 0.0) for k in keys)

    checks = [
        ("Redis used_memory", sum(predicted.redis.values()), above_empty(["redis_used_memory"])),
        ("shard RSS", sum(predicted.shards.values()), above_empty(shard_series(rows))),
    ]
    verdicts = []
    for name, model, measured in checks:
        off = 100 * (model - measured) / measured if measured > 0 else math.nan
        text = (
            f"capacity model: {name} above empty {model / MB:,.1f} MB predicted, {measured / MB:,.1f} MB "
            f"measured ({off:+.0f}%, within {MODEL_TOLERANCE_PERCENT:g}%)"
        )
        verdicts.append((abs(off) <= MODEL_TOLERANCE_PERCENT, text))
    return verdicts


def _raise_interrupt(*_: object) -> NoReturn:
    raise KeyboardInterrupt


def main() -> None:
    args = parse_args()
    out = args.out or ROOT / "var" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    progress(f"output: {out}")
    # SIGTERM stops the soak like Ctrl-C: the service is stopped and what was measured written.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    measured = Measured()
    code = 0
    try:
        run(args, out, measured)
    except KeyboardInterrupt:
        progress("interrupted: the load processes and the service were stopped")
        code = 130
    except (RuntimeError, TimeoutError) as exc:
        progress(f"soak failed: {exc}")
        code = 1
    if not measured.rows:
        sys.exit(code or 1)
    passed = finish(args, out, measured.rows, measured.facts)
    sys.exit(code or (0 if passed else 1))


if __name__ == "__main__":
    main()
