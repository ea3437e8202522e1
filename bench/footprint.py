"""What one user costs: bytes in a shard's memory and in Redis, by catalogue size and interactions.

Issue 10 asks for a capacity model; this measures its inputs. For each catalogue size and number
of interactions (a Recommend of 3 items, then a click with its decision_id, on one surface), a
real ShardCore against an embedded Redis serves ``--copies`` users that history, then:

- **memory, measured**: tracemalloc's growth while a fresh shard rebuilds the users from Redis
  (every object reachable from their states, allocated by the load), per user, next to
  ``UserState.footprint()``, the estimate the shard's byte budget uses, and the **baseline**: the
  dense policy arrays alone (what a per-user state held before states were packed at rest);
- **Redis**: ``MEMORY USAGE`` of each of one user's keys, by family, after a stop (final
  snapshot) and again once compaction has run (logs kept 1 s, then one more snapshot write).
  The join index, event ids and stored ledger entries ("led") live for their windows (retention.py);
  the snapshot and the logs are what stays.

Run: ``.venv/bin/python bench/footprint.py [--items 30,1000,10000] [--interactions 1,20,100]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import tracemalloc
from collections import defaultdict
from typing import Any

import redis.asyncio as aioredis
from _cli import int_list
from _report import print_environment
from _workload import NO_BURST_LIMIT

from rewardloop.learning.rewards import Signal
from rewardloop.state.keys import pseudonymize
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.messages import Decision, FeedbackCall, RecommendCall, Recorded
from rewardloop.workers.redis_server import EmbeddedRedis
from rewardloop.workers.shard import ShardCore

SURFACE = "s"
FAMILIES = {"fb": "feedback log", "dec": "decision log", "dix": "join index", "ids": "event ids", "snap": "snapshot"}


def config_for(items: int, logs_seconds: int) -> ServiceConfig:
    return ServiceConfig.from_dict(
        {
            "service": {
                "shards": 1,
                "quality": NO_BURST_LIMIT,
                "retention": {"logs_seconds": logs_seconds, "user_state_seconds": 86_400},
            },
            "surfaces": {SURFACE: {"algorithm": "thompson", "items": [f"item-{k:05d}" for k in range(items)]}},
        }
    )


async def serve(shard: ShardCore, user: str, interactions: int) -> None:
    for step in range(interactions):
        [decision] = await shard.recommend([RecommendCall(user, SURFACE, 3)])
        assert isinstance(decision, Decision)
        call = FeedbackCall(
            user, f"{user}-{step}", decision.items[0].item_id, Signal.CLICK.value, float(step % 3 == 0),
            int(time.time() * 1000), decision_id=decision.decision_id,
        )  # fmt: skip
        [recorded] = await shard.feedback([call])
        assert isinstance(recorded, Recorded) and not recorded.flag, recorded


async def redis_bytes(client: aioredis.Redis, user: str) -> dict[str, int]:
    """MEMORY USAGE of the user's keys, summed by family."""
    sizes: dict[str, int] = defaultdict(int)
    async for key in client.scan_iter(match=f"rl:{{{user}}}:*"):
        family = key.decode().split(":")[2]
        sizes[FAMILIES.get(family, family)] += int(await client.memory_usage(key, samples=0) or 0)
    return dict(sizes)


async def memory_of_load(shard: ShardCore, users: list[str]) -> tuple[float, int, int]:
    """(tracemalloc bytes per user of loading ``users`` from Redis, the footprint estimate of one,
    its dense arrays' bytes). The first user is loaded and dropped first, and a burst of unknown
    users opens the connection pool, so what is left is the users' own state."""
    await shard.users.get({pseudonymize(f"warm-up-{k}", b"bench") for k in range(64)} | {users[0]})
    for k in range(64):
        shard.users._drop(pseudonymize(f"warm-up-{k}", b"bench"))
    shard.users._drop(users[0])
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    states = await shard.users.get(set(users))
    for _ in range(3):  # the finished load tasks and their Redis calls are let go
        await asyncio.sleep(0)
    gc.collect()
    measured = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    state = states[users[0]]
    arrays = sum(a.nbytes for s in state.policies.values() for a in s.dense().arrays.values())
    return measured / len(users), state.footprint(), arrays


async def measure(url: str, items: int, interactions: int, copies: int) -> dict[str, Any]:
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    users = [pseudonymize(f"footprint-{items}-{interactions}-{k}", b"bench") for k in range(copies)]
    user = users[0]
    shard = ShardCore(config_for(items, logs_seconds=1), url)
    try:
        for u in users:
            await serve(shard, u, interactions)
        await shard.flush()
        stopped = await redis_bytes(client, user)
        await asyncio.sleep(1.1)  # past the 1 s log retention: the next snapshot compacts
        state = (await shard.users.get({user}))[user]
        shard.write_behind.snapshot(state)
        await shard.flush()
        compacted = await redis_bytes(client, user)
    finally:
        await shard.close()
    # A fresh shard loads the users from Redis alone: what a loaded user costs in memory.
    reader = ShardCore(config_for(items, logs_seconds=1), url)
    try:
        measured, estimate, arrays = await memory_of_load(reader, users)
    finally:
        await reader.close()
        await client.aclose()
    return {
        "items": items, "interactions": interactions, "memory": measured, "estimate": estimate,
        "arrays": arrays, "redis_stopped": stopped, "redis_compacted": compacted,
    }  # fmt: skip


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\nper user: shard memory (loaded from Redis) and Redis bytes")
    header = ("items", "inter.", "memory", "estimate", "est/mem", "arrays (base)", "redis", "redis compacted")
    print("  ".join(f"{h:>14}" for h in header))
    for r in rows:
        cells = (
            r["items"], r["interactions"], f"{r['memory']:,.0f}", f"{r['estimate']:,}",
            f"{r['estimate'] / r['memory']:.2f}", f"{r['arrays']:,}",
            f"{sum(r['redis_stopped'].values()):,}", f"{sum(r['redis_compacted'].values()):,}",
        )  # fmt: skip
        print("  ".join(f"{c:>14}" for c in cells))
    print("\nRedis bytes by key family (after compaction)")
    for r in rows:
        families = ", ".join(f"{k} {v:,}" for k, v in sorted(r["redis_compacted"].items()))
        print(f"  {r['items']:>6} items, {r['interactions']:>4} interactions: {families or '-'}")


async def main_async(items: list[int], interactions: list[int], copies: int) -> None:
    print_environment({"benchmark": "footprint"})
    rows = []
    with EmbeddedRedis() as server:
        for n_items in items:
            for n in interactions:
                rows.append(await measure(server.url, n_items, n, copies))
                print(f"  measured {n_items} items x {n} interactions", flush=True)
    print_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int_list, default=[30, 1000, 10000], help="catalogue sizes")
    parser.add_argument("--interactions", type=int_list, default=[1, 20, 100], help="interactions per user")
    parser.add_argument("--copies", type=int, default=50, help="users with that history (memory per user: their mean)")
    args = parser.parse_args()
    asyncio.run(main_async(args.items, args.interactions, args.copies))


if __name__ == "__main__":
    main()
