"""What the shard's two writes per call cost its CPU: ``state/direct.py`` next to redis-py's pipeline.

A shard makes one Record call's events durable in one round trip (``Store.record_feedback``) and
writes decisions behind in another (``Store.write_back``). At the rates where calls reach a shard one
at a time, each round trip carries one event or one decision, so its fixed cost is paid per call.
This runs those two writes with one event / one decision each, on a real embedded Redis (AOF,
``appendfsync always``), in the shard's event loop (uvloop), in alternating blocks:

- direct: the service as it is (``DirectPipelines``: redis-py's connections, not its pool);
- redis-py pipeline (baseline): the same commands through ``redis.asyncio``'s pipeline and pool.

Printed per variant and write: CPU of this process per call (min and median of the blocks) and wall
time per call (median), with the direct path's saving.

    .venv/bin/python bench/direct.py
    .venv/bin/python bench/direct.py --calls 5000 --blocks 6
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from _cli import run_main
from _report import fmt, print_environment, progress, table

from rewardloop.state.direct import DirectPipelines
from rewardloop.state.records import DecisionRecord, FeedbackRecord
from rewardloop.state.store import Snapshot, Store
from rewardloop.workers.redis_server import EmbeddedRedis

USERS = 500


def via_redis_py_switch() -> Callable[[bool], None]:
    """A switch: on, the two writes go through redis-py's pipeline and pool (the baseline)."""
    direct = DirectPipelines.execute

    async def via_redis_py(self: DirectPipelines, pipe: Any) -> list[Any]:
        async with pipe:
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies

    def switch(on: bool) -> None:
        DirectPipelines.execute = via_redis_py if on else direct  # type: ignore[method-assign]

    return switch


def writes(store: Store) -> dict[str, Callable[[int], Awaitable[Any]]]:
    """Name -> one call of that write, for the i-th call."""
    now_ms = int(time.time() * 1000)

    def record(i: int) -> Awaitable[Any]:
        user = f"{i % USERS:032x}"
        event = FeedbackRecord(user, uuid.uuid4().hex, "home_feed", "item-001", 1.0, value=1.0, occurred_at_ms=now_ms)
        return store.record_feedback([event])

    def write_back(i: int) -> Awaitable[Any]:
        user = f"{i % USERS:032x}"
        decision = DecisionRecord(
            user, uuid.uuid4().hex, "home_feed", ("item-001", "item-002"), (0.5, 0.5), "thompson", "v1", now_ms,
            closes_at_ms=now_ms + 60_000,
        )  # fmt: skip
        snapshots = {user: Snapshot(b"x" * 400, "0-1")} if i % 8 == 0 else {}
        return store.write_back([decision], snapshots, "rl:bench:windows")

    return {"record_feedback": record, "write_back": write_back}


async def main(args: argparse.Namespace) -> None:
    print_environment({"load": f"{args.calls:,} calls per block, one at a time, {USERS} users"})
    switch = via_redis_py_switch()
    variants = {"direct": False, "redis-py pipeline (baseline)": True}
    cpu: dict[tuple[str, str], list[float]] = {}
    wall: dict[tuple[str, str], list[float]] = {}
    with EmbeddedRedis() as redis:
        store = Store(redis.url)
        try:
            await store._load_scripts()
            for name, call in writes(store).items():
                for i in range(args.calls // 4):  # warm-up: connections, scripts, keys
                    await call(i)
                for block in range(args.blocks * len(variants)):
                    variant = list(variants)[block % len(variants)]
                    switch(variants[variant])
                    try:
                        start_cpu, start = time.process_time(), time.perf_counter()
                        for i in range(args.calls):
                            await call(i)
                        cpu.setdefault((name, variant), []).append(1e6 * (time.process_time() - start_cpu) / args.calls)
                        wall.setdefault((name, variant), []).append(1e6 * (time.perf_counter() - start) / args.calls)
                    finally:
                        switch(False)
                    progress(f"  {name} block {block + 1}: {variant:<28} {fmt(cpu[name, variant][-1])} us CPU per call")
        finally:
            await store.close()
    rows = []
    for name, variant in cpu:
        ms = cpu[name, variant]
        baseline = statistics.median(cpu[name, "redis-py pipeline (baseline)"])
        saving = f"{100 * (1 - statistics.median(ms) / baseline):.0f}%" if variant == "direct" else ""
        median_wall = statistics.median(wall[name, variant])
        rows.append([name, variant, fmt(min(ms)), fmt(statistics.median(ms)), fmt(median_wall), saving])
    print(table(["write", "variant", "CPU us per call, min", "median", "wall us, median", "CPU saved"], rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="calls per measured block (default 3000)")
    parser.add_argument("--blocks", type=int, default=4, help="measured blocks per variant (default 4)")
    args = parser.parse_args()
    for name in ("calls", "blocks"):
        if getattr(args, name) < 4:
            parser.error(f"--{name} must be >= 4")
    run_main(lambda: main(args), uvloop=True)  # as a shard actor runs
