"""The serving processes freeze what they hold out of the garbage collector (workers/heap.py)."""

from __future__ import annotations

import asyncio
import collections
import gc
import time

import redis.asyncio as aioredis

from rewardloop.learning.rewards import Signal
from rewardloop.state.keys import pseudonymize
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.heap import Heap
from rewardloop.workers.messages import Decision, FeedbackCall, RecommendCall, Recorded
from rewardloop.workers.redis_server import EmbeddedRedis
from rewardloop.workers.shard import ShardCore

# A budget that evicts, windows that close, snapshots every few rewards: all the state a shard drops.
CONFIG = ServiceConfig.from_dict(
    {
        "service": {"shards": 1, "memory_budget_mb": 1, "snapshot_every": 4},
        "surfaces": {
            "s": {"algorithm": "thompson", "items": [f"i{k}" for k in range(30)], "reward": {"window_seconds": 1}},
            "u": {"algorithm": "ucb1", "items": [f"i{k}" for k in range(30)], "reward": {"window_seconds": 1}},
        },
    }
)


async def _work(shard: ShardCore, users: list[str], rounds: int) -> None:
    for step in range(rounds):
        for k, user in enumerate(users):
            for surface in ("s", "u"):
                [decision] = await shard.recommend([RecommendCall(user, surface, 5)])
                assert isinstance(decision, Decision)
                if (k + step) % 2:
                    call = FeedbackCall(user, f"{user}-{surface}-{step}", decision.items[1].item_id,
                                        Signal.CLICK.value, 1.0, int(time.time() * 1000),
                                        decision_id=decision.decision_id)  # fmt: skip
                    [recorded] = await shard.feedback([call])
                    assert isinstance(recorded, Recorded)
        await asyncio.sleep(1.5)  # the windows of this round close


async def test_what_a_shard_drops_is_freed_without_the_cycle_collector(redis_server: EmbeddedRedis) -> None:
    """A shard freezes its heap every few seconds: a reference cycle among frozen objects that becomes
    garbage later is never collected. So what a shard's work drops (users evicted and reloaded, ledger
    entries settled, windows closed, decisions forgotten, snapshots written) must be freed by reference
    counting alone: with the collector off, none of it is left in garbage cycles."""
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    await aioredis.Redis.from_url(url).flushdb()
    users = [pseudonymize(f"heap-{k}", b"test") for k in range(300)]
    shard = ShardCore(CONFIG, url)
    gc.collect()
    gc.disable()
    try:
        await _work(shard, users, rounds=3)
        await shard.flush()
        stats = shard.stats()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        ours = collections.Counter(
            f"{type(o).__module__}.{type(o).__qualname__}"
            for o in gc.garbage
            if type(o).__module__.startswith("rewardloop")
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        await shard.close()
    assert stats["evictions"] > len(users)  # the work did drop users
    assert not ours, f"rewardloop objects freed only by the cycle collector: {ours.most_common(10)}"


def test_the_heap_freezes_what_survives_and_counts_every_collection() -> None:
    heap = Heap()
    try:
        before = heap.stats()
        heap.start(every=0.05)
        frozen = gc.get_freeze_count()
        kept = [[k] for k in range(5_000)]  # tracked survivors, made after the first freeze
        deadline = time.monotonic() + 30
        while gc.get_freeze_count() < frozen + len(kept) and time.monotonic() < deadline:
            time.sleep(0.01)
        after, frozen_after = heap.stats(), gc.get_freeze_count()
    finally:
        heap.stop()
        gc.unfreeze()
    assert frozen_after >= frozen + len(kept) > len(kept)
    assert after["gc_freezes"] >= before["gc_freezes"] + 2
    assert after["gc_collections_gen2"] >= before["gc_collections_gen2"] + 2
    assert 0.0 <= after["gc_pause_max_seconds"] < 60.0
