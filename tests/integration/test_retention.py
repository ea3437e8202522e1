"""Retention and compaction in a real Redis (state/retention.py): every key family is bounded in
time, and nothing a snapshot does not cover is ever trimmed."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rewardloop.learning.rewards import Signal
from rewardloop.server.status import to_service_error
from rewardloop.state.keys import UserKeys, new_decision_id, pseudonymize
from rewardloop.state.records import DecisionRecord, FeedbackRecord
from rewardloop.state.retention import DAY_MS, PRUNE_FLOOR, Retention, day_of
from rewardloop.state.store import Seen, Snapshot, Store, check_no_eviction, out_of_memory
from rewardloop.workers.redis_server import EmbeddedRedis

HOUR_MS = 3_600_000


class Clock:
    def __init__(self, at_ms: int) -> None:
        self.at_ms = at_ms

    def __call__(self) -> float:
        return self.at_ms / 1000


def _event(pseudonym: str, event_id: str, at_ms: int, flag: str = "") -> FeedbackRecord:
    return FeedbackRecord(pseudonym, event_id, "s", "a", 1.0, Signal.CLICK.value, 1.0, at_ms, flag=flag)


@pytest.fixture
def clock() -> Clock:
    """The store's clock: it starts at Redis's (key lifetimes are Redis's), and tests move it on."""
    return Clock(int(time.time() * 1000))


async def assert_expires_in(client: aioredis.Redis, key: str, ms: int) -> None:
    """``key`` expires ``ms`` from now, give or take the 5 s a test takes."""
    ttl = await client.pttl(key)
    assert ms - 5_000 <= ttl <= ms, (key, ttl, ms)


@pytest.fixture
async def redis_client(redis_server: EmbeddedRedis) -> aioredis.Redis:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_a_retry_is_found_within_the_dedup_window_in_one_small_hash_per_user(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, clock: Clock
) -> None:
    t0 = clock.at_ms
    store = Store(redis_server.url, clock=clock)
    user = pseudonymize("retention-ids", b"t")
    keys = UserKeys(user)
    try:
        [first] = await store.record_feedback([_event(user, "e1", t0, flag="burst: test")])
        assert isinstance(first, str)
        # Even once compaction removed its entry, a retry is told the original was flagged.
        clock.at_ms = t0 + 30 * DAY_MS
        await store.write_back([], {user: Snapshot(b"covers-it", first)})
        await store.write_back([], {user: Snapshot(b"covers-it", f"{t0 + DAY_MS}-0")})
        assert await redis_client.xlen(keys.feedback_log) == 0
        for later_ms in (HOUR_MS, 3 * DAY_MS, 7 * DAY_MS - 1):
            clock.at_ms = t0 + later_ms
            [again] = await store.record_feedback([_event(user, "e1", t0)])
            assert again == Seen(first, "burst: test"), later_ms  # the original's entry and flag
        # One hash per user, living 7 days after its last write; no key per event.
        await assert_expires_in(redis_client, keys.event_ids, 7 * DAY_MS)
        assert await redis_client.exists(keys.legacy_event("e1")) == 0
        # Event ids recorded by earlier versions (a marker key, a per-day hash) are still retries.
        await redis_client.set(keys.legacy_event("old"), first, ex=60)
        [legacy] = await store.record_feedback([_event(user, "old", t0)])
        assert legacy == Seen(first, "")  # its flag is read from its entry, compacted away here
        await redis_client.hset(keys.day_event_ids(day_of(clock.at_ms) - 6), "by-day", f"{first} burst: x")
        assert await store.record_feedback([_event(user, "by-day", t0)]) == [Seen(first, "burst: x")]
    finally:
        await store.close()


async def test_the_id_hash_keeps_every_id_of_the_window_and_at_most_twice_those(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, clock: Clock
) -> None:
    """Pruned by receipt time once it doubled: a retry within ``dedup_seconds`` is always found, and
    the hash never holds more than twice the window's ids (and the prune floor)."""
    window_ms = 10 * 60_000
    store = Store(redis_server.url, Retention(logs_seconds=3600, dedup_seconds=window_ms // 1000), clock=clock)
    user = pseudonymize("retention-ids-pruned", b"t")
    keys = UserKeys(user)
    t0 = clock.at_ms
    # Ids received over the last 35 minutes, one every 7 s (the entry id is the receipt time).
    history = {f"old{k}": t0 - k * 7_000 for k in range(300)}
    await redis_client.delete(keys.event_ids)
    await redis_client.hset(keys.event_ids, mapping={e: f"{at}-0" for e, at in history.items()})
    try:
        [entry] = await store.record_feedback([_event(user, "new0", t0)])
        assert isinstance(entry, str)
        live = {e for e, at in history.items() if at >= t0 - window_ms}
        assert 80 < len(live) < 90
        kept = {f.decode() for f in await redis_client.hkeys(keys.event_ids)} - {""}
        assert kept == live | {"new0"}  # the prune dropped exactly the ids past the window
        for event_id in sorted(live)[:20]:
            [again] = await store.record_feedback([_event(user, event_id, t0)])
            assert again == Seen(f"{history[event_id]}-0", ""), event_id
        # More ids: the hash grows to twice what the prune left, not beyond.
        for k in range(1, 300):
            await store.record_feedback([_event(user, f"new{k}", t0)])
            size = await redis_client.hlen(keys.event_ids) - 1  # less the prune mark
            assert size <= max(2 * (len(live) + k + 1), PRUNE_FLOOR), (k, size)
        assert await redis_client.hlen(keys.event_ids) - 1 == len(live) + 300  # nothing live was dropped
    finally:
        await store.close()


async def test_a_snapshot_compacts_only_what_it_covers_and_retention_has_passed(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, clock: Clock
) -> None:
    t0 = clock.at_ms
    retention = Retention(logs_seconds=3600, user_state_seconds=7200)
    store = Store(redis_server.url, retention, clock=clock)
    user = pseudonymize("retention-compaction", b"t")
    keys = UserKeys(user)
    await redis_client.delete(keys.feedback_log, keys.decision_log, keys.snapshot)
    try:
        decision = DecisionRecord(user, new_decision_id(t0), "s", ("a",), (1.0,), "ucb1", "v.0", t0)
        await store.write_back([decision], {})
        ids = []
        for k in range(6):
            [stream_id] = await store.record_feedback([_event(user, f"c{k}", clock.at_ms)])
            assert isinstance(stream_id, str)
            ids.append(stream_id)
        # Entries no snapshot covers are kept whatever their age: the log has no lifetime yet.
        assert await redis_client.pttl(keys.feedback_log) == -1

        async def left() -> list[str]:
            return [entry_id.decode() for entry_id, _ in await redis_client.xrange(keys.feedback_log)]

        # Within retention, a snapshot covering everything trims nothing.
        await store.write_back([], {user: Snapshot(b"snap-1", ids[-1])})
        assert await left() == ids and await redis_client.xlen(keys.decision_log) == 1
        assert await redis_client.get(keys.snapshot) == b"snap-1"
        await assert_expires_in(redis_client, keys.snapshot, 7_200_000)
        # Covered whole, the log expires with retention, until the next append.
        await assert_expires_in(redis_client, keys.feedback_log, 3_600_000)
        [extra] = await store.record_feedback([_event(user, "c-extra", clock.at_ms)])
        assert isinstance(extra, str) and await redis_client.pttl(keys.feedback_log) == -1
        ids.append(extra)
        # Two hours on every entry is past retention, but only those the snapshot covers may go.
        clock.at_ms = t0 + 2 * HOUR_MS
        await store.write_back([], {user: Snapshot(b"snap-2", ids[2])})
        assert await left() == ids[2:]  # the snapshot's own position stays (XTRIM MINID keeps it)
        await store.write_back([], {user: Snapshot(b"snap-3", ids[-1])})
        assert await left() == ids[-1:]
        assert await redis_client.xlen(keys.decision_log) == 0  # decisions go by retention alone
    finally:
        await store.close()


async def test_decisions_are_joined_from_a_per_user_index_pruned_after_the_join_horizon(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, clock: Clock
) -> None:
    t0 = clock.at_ms
    join_ms = 10 * 60_000
    store = Store(redis_server.url, Retention(logs_seconds=3600, user_state_seconds=3600), join_ms, clock=clock)
    user = pseudonymize("retention-decisions", b"t")
    keys = UserKeys(user)

    def decided(at_ms: int) -> DecisionRecord:
        return DecisionRecord(user, new_decision_id(at_ms), "s", ("a", "b"), (0.5, 0.5), "ucb1", "v.0", at_ms,
                              closes_at_ms=at_ms + 1)  # fmt: skip

    decision = decided(t0)
    legacy = DecisionRecord(user, "f" * 32, "s", ("a",), (1.0,), "ucb1", "v.0", t0)
    by_day = decided(t0 - 1)
    await redis_client.hset(keys.legacy_decision_index, legacy.decision_id, legacy.to_json())
    await redis_client.hset(keys.day_decision_index(day_of(t0 - 1)), by_day.decision_id, by_day.to_json())
    try:
        await store.write_back([decision], {})
        lookups = [(user, decision.decision_id), (user, legacy.decision_id), (user, by_day.decision_id), (user, "x")]
        assert await store.find_decisions(lookups) == [decision, legacy, by_day, None]
        await assert_expires_in(redis_client, keys.decision_index, join_ms)
        await assert_expires_in(redis_client, keys.decision_log, 3_600_000)
        # Another user cannot join it.
        assert await store.find_decisions([(pseudonymize("other", b"t"), decision.decision_id)]) == [None]
        # Decisions made over the last 35 minutes, oldest first: those past the horizon are pruned.
        history = [decided(t0 - k * 7_000) for k in reversed(range(1, 300))]
        await store.write_back(history, {})
        live = [d for d in history if d.decided_at_ms >= t0 - join_ms]
        found = await store.find_decisions([(user, d.decision_id) for d in history])
        assert found[-len(live) :] == live  # every decision feedback may still join
        assert await redis_client.hlen(keys.decision_index) - 1 <= 2 * (len(live) + 1)
    finally:
        await store.close()


async def test_a_full_redis_refuses_writes_and_keeps_what_it_acknowledged(tmp_path: Path) -> None:
    t0 = int(time.time() * 1000)
    with EmbeddedRedis(tmp_path, maxmemory=3 * 2**20) as server:
        await check_no_eviction(server.url)  # noeviction: writes fail instead of data going
        store = Store(server.url)
        client = aioredis.Redis.from_url(server.url)
        users = [pseudonymize(f"full-{k}", b"t") for k in range(20)]
        acknowledged = 0
        try:
            with pytest.raises(RedisError) as refused:
                for batch in range(10_000):
                    records = [_event(users[k % 20], f"f{batch}-{k}", t0) for k in range(50)]
                    await store.record_feedback(records)
                    acknowledged += len(records)
            assert out_of_memory(refused.value) and acknowledged > 0
            error = to_service_error(refused.value)
            assert error is not None and error.code is grpc.StatusCode.UNAVAILABLE and "full" in error.message
            # Every acknowledged event is there; of the refused batch, some may be (a retry dedupes them).
            logged = sum([await client.xlen(UserKeys(u).feedback_log) for u in users])
            assert acknowledged <= logged < acknowledged + 50
            # A Redis that may evict is refused at start.
            await client.config_set("maxmemory-policy", "allkeys-lru")
            with pytest.raises(RuntimeError, match="maxmemory-policy is 'allkeys-lru'"):
                await check_no_eviction(server.url)
        finally:
            await client.aclose()
            await store.close()
