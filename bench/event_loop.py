"""What the front's event loop costs: the service on uvloop next to the standard library's asyncio loop.

Each block starts the service as production does (``python -m rewardloop.server --event-loop X``,
supervisor, local Ray, embedded Redis with AOF, bench/soak.toml by default), sends the soak's pairs
(Recommend of 10, then a CLICK Record with its decision_id) open loop at --rate RPC/s, and measures
after --warmup seconds for --seconds: CPU per RPC of the front process and of the whole service
(front, shards, Redis, Ray's processes), and the RPCs' p50 / p99 latency from the scheduled send.
Blocks alternate between the two loops (the baseline, asyncio, first), so the box's noise falls on
both alike; printed per loop: the min and median over its blocks.

    .venv/bin/python bench/event_loop.py                       # 2 blocks each at 300 RPC/s
    .venv/bin/python bench/event_loop.py --rate 400 --blocks 3
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from _measure import percentile
from _report import fmt, print_environment, progress, table
from _soak_load import RPCS, OpenLoopSpec, PairSpec, SoakClients, Tally
from _soak_sample import ProcessRoles
from _soak_stack import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
LOOPS = ("asyncio", "uvloop")  # the baseline first
SERVICE_ROLES = ("front", "redis", "ray", "supervisor")  # and every shard-<k>
CTR = 0.1


def block(loop: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    """One service on ``loop`` under the open loop: CPU per RPC (ms) and latency (ms) of the measured part."""
    tag = f"{loop}-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        clients = stack.enter_context(SoakClients(1))
        options = ["--event-loop", loop, "--metrics-port", "0"]
        server = ServerProcess(out / tag / "data", out / tag / "server.log", args.config, None, options)
        stack.callback(server.stop)
        endpoints = server.start()
        pairs = PairSpec(endpoints.target, "home_feed", args.users, 10, CTR, args.seed, tag)
        roles = ProcessRoles(server.pid, clients.pids)
        spec = OpenLoopSpec(
            pairs, rate=args.rate / 2, duration=args.warmup + args.seconds, interval=args.interval,
            max_in_flight=1000, start_at=time.time() + 1.0,
        )  # fmt: skip
        clients.start_open_loop(spec)
        measured, seconds, cpu = Tally(), 0.0, {"front": 0.0, "service": 0.0}
        while (tally := clients.interval(timeout=args.interval + 60)) is not None:
            usage = roles.usage()  # cores since the previous reading
            if (tally.index + 1) * args.interval <= args.warmup:
                continue
            measured.merge(tally)
            seconds += args.interval
            cpu["front"] += usage.get("cpu_front", 0.0) * args.interval
            cpu["service"] += sum(v * args.interval for k, v in usage.items() if _service_cpu(k))
        if server.exited is not None or not seconds:
            raise RuntimeError(f"the service on {loop} stopped before the measured part (see {server.log_path})")
    answered = sum(measured.ok.values())
    latencies = sorted(x for rpc in RPCS for x in measured.latencies[rpc])
    return {
        "front": cpu["front"] * 1000 / answered,
        "service": cpu["service"] * 1000 / answered,
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "errors": float(measured.error_count),
        "rps": answered / seconds,
    }


def _service_cpu(key: str) -> bool:
    """Whether a ``ProcessRoles.usage`` key is the CPU of one of the service's processes."""
    return key.startswith("cpu_") and (key[4:] in SERVICE_ROLES or key[4:].startswith("shard-"))


def main(args: argparse.Namespace) -> None:
    print_environment({
        "config": args.config,
        "load": f"open loop, {args.rate:g} RPC/s ({args.rate / 2:g} pairs/s), {args.users:,} users",
        "schedule": f"{args.blocks} block(s) per loop: {args.warmup:g} s warm-up + {args.seconds:g} s measured",
    })  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {loop: [] for loop in LOOPS}
    with tempfile.TemporaryDirectory(prefix="event-loop-") as tmp:
        for k in range(args.blocks * len(LOOPS)):
            loop = LOOPS[k % len(LOOPS)]
            progress(f"block {k + 1}: the front on {loop} ...")
            results[loop].append(block(loop, args, Path(tmp)))
            r = results[loop][-1]
            progress(f"  {fmt(r['front'])} ms front CPU, {fmt(r['service'])} ms service CPU per RPC; "
                     f"p99 {fmt(r['p99'], 0)} ms; {fmt(r['rps'], 0)} RPC/s, {r['errors']:.0f} errors")  # fmt: skip
    rows = []
    for loop in LOOPS:
        runs = results[loop]

        def cell(key: str, digits: int = 2, runs: list[dict[str, float]] = runs) -> str:
            values = [r[key] for r in runs]
            return f"{fmt(min(values), digits)} / {fmt(statistics.median(values), digits)}"

        name = f"{loop} (baseline)" if loop == LOOPS[0] else loop
        rows.append([name, cell("front"), cell("service"), cell("p50", 1), cell("p99", 0),
                     f"{sum(r['errors'] for r in runs):.0f}"])  # fmt: skip
    print("\nms per RPC and ms latency, min / median over the blocks")
    print(table(["front's loop", "front CPU", "service CPU", "p50", "p99", "errors"], rows))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=300.0, help="RPC/s, Recommend + Record (default 300)")
    parser.add_argument("--warmup", type=float, default=30.0, help="uncounted seconds of load per block")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per block")
    parser.add_argument("--interval", type=float, default=15.0, help="seconds per reading (divides both)")
    parser.add_argument("--blocks", type=int, default=2, help="blocks per loop (default 2)")
    parser.add_argument("--users", type=int, default=5000, help="distinct user ids")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--config", default=str(ROOT / "bench" / "soak.toml"), help="the service's TOML config")
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
