"""The shard's user cache against a real Redis: one state object per user, whoever asks when.

Two state objects for one user lose feedback: an event applied to one is missing from the
other, and a snapshot of the other then claims a log position it does not cover.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from rewardloop.learning.bandits import make_policy
from rewardloop.learning.rewards import Signal
from rewardloop.state.keys import pseudonymize
from rewardloop.state.store import Store
from rewardloop.workers import users as users_module
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.messages import Decision, FeedbackCall, RecommendCall, Recorded
from rewardloop.workers.redis_server import EmbeddedRedis
from rewardloop.workers.shard import ShardCore
from rewardloop.workers.users import UserCache

CONFIG = ServiceConfig.from_dict({"surfaces": {"s": {"algorithm": "ucb1", "items": ["a", "b"]}}})


class CountingStore(Store):
    """A real store that counts the user loads it serves."""

    loads = 0

    async def load_snapshot(self, pseudonym: str) -> bytes | None:
        self.loads += 1
        return await super().load_snapshot(pseudonym)


async def test_a_second_request_during_or_just_after_a_load_gets_the_same_state(redis_server: EmbeddedRedis) -> None:
    store = CountingStore(redis_server.url)
    policies = {n: make_policy(s.policy_config, len(s.items)) for n, s in CONFIG.surfaces.items()}
    cache = UserCache(store, CONFIG, policies, CONFIG.surfaces, on_evict=lambda _: None)
    try:
        # The second request comes k loop steps after the first: while its load is in flight,
        # at the step it completes, and after. Every k must find the one state.
        for k in range(60):
            user = pseudonymize(f"cache-race-{k}", b"test")
            first = asyncio.create_task(cache.get({user}))
            for _ in range(k):
                await asyncio.sleep(0)
            second = await cache.get({user})
            assert (await first)[user] is second[user], f"two states for one user (second request {k} steps on)"
        assert store.loads == 60
    finally:
        await store.close()


async def test_a_held_user_is_not_evicted_and_is_rebuilt_after_an_error(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(users_module, "MAX_CACHED_USERS", 2)
    store = CountingStore(redis_server.url)
    policies = {n: make_policy(s.policy_config, len(s.items)) for n, s in CONFIG.surfaces.items()}
    evicted: list[str] = []
    cache = UserCache(store, CONFIG, policies, CONFIG.surfaces, on_evict=lambda s: evicted.append(s.pseudonym))
    held, *others = (pseudonymize(f"cache-hold-{k}", b"test") for k in range(4))
    try:
        async with cache.held({held}) as users:
            users[held].since_snapshot = 1  # unsnapshotted rewards: eviction would hand it over
            for other in others:  # the held user becomes the least recently used
                await cache.get({other})
                (await cache.get({other}))[other].since_snapshot = 1
            assert (await cache.get({held}))[held] is users[held]
        assert len(list(cache.values())) == 2 and evicted == others[:2]
        assert store.loads == 4

        with pytest.raises(RuntimeError):
            async with cache.held({held}) as users:
                raise RuntimeError("an event was written but not applied")
        assert (await cache.get({held}))[held] is not users[held]  # rebuilt from Redis
        assert store.loads == 5
    finally:
        await store.close()


BUDGET_CONFIG = {
    "service": {"shards": 1, "memory_budget_mb": 1},
    # No population prior: it moves with the shards' timing, not with what a user did.
    "surfaces": {"s": {"algorithm": "thompson", "items": [f"i{k}" for k in range(30)], "cold_start": {"strength": 0}}},
}


async def _drive(shard: ShardCore, users: list[str], rounds: int) -> list[tuple[tuple[str, ...], tuple[float, ...]]]:
    """Each user in turn: a slate of 3, a click on its first item; what was decided."""
    decided = []
    for step in range(rounds):
        for k, user in enumerate(users):
            [decision] = await shard.recommend([RecommendCall(user, "s", 3)])
            assert isinstance(decision, Decision)
            decided.append((tuple(i.item_id for i in decision.items), tuple(i.propensity for i in decision.items)))
            item = decision.items[0].item_id
            call = FeedbackCall(user, f"{user}-{step}", item, Signal.CLICK.value, float((k + step) % 3 == 0),
                                int(time.time() * 1000), decision_id=decision.decision_id)  # fmt: skip
            [recorded] = await shard.feedback([call])
            assert isinstance(recorded, Recorded) and not recorded.flag
            assert shard.users.bytes <= shard.users.budget
    return decided


async def test_a_shard_within_a_small_byte_budget_evicts_and_reloads_users_exactly(
    redis_server: EmbeddedRedis,
) -> None:
    """800 users at ~2.5 KB each in 0.9 MiB: users are evicted and reloaded all along, and decide
    exactly as in a shard that keeps them all (the same seeds, the same evidence)."""
    users = [pseudonymize(f"budget-{k}", b"test") for k in range(800)]
    tight = ServiceConfig.from_dict(BUDGET_CONFIG)
    roomy = ServiceConfig.from_dict({**BUDGET_CONFIG, "service": {"shards": 1, "memory_budget_mb": 1024}})
    decided, states = [], []
    for config, db in ((tight, 5), (roomy, 6)):
        url = redis_server.url.rsplit("/", 1)[0] + f"/{db}"
        await aioredis.Redis.from_url(url).flushdb()
        shard = ShardCore(config, url)
        try:
            decided.append(await _drive(shard, users, rounds=3))
            states.append([await shard.user_state(u) for u in users])
            stats = shard.stats()
        finally:
            await shard.close()
        if config is tight:
            assert stats["evictions"] > len(users)  # every round reloads most users
            assert stats["bytes"] <= stats["budget_bytes"] and stats["users"] < len(users)
        else:
            assert stats["evictions"] == 0 and stats["users"] == len(users)
    assert decided[0] == decided[1]
    assert states[0] == states[1]
