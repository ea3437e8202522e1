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
from rewardloop.state.keys import UserKeys, decision_day, new_decision_id, pseudonymize
from rewardloop.state.records import DecisionRecord, FeedbackRecord
from rewardloop.state.retention import DAY_MS, Retention, day_of
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


async def test_a_retry_is_found_for_7_days_in_small_per_day_hashes(
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
        # One hash per day of first receipt, living until 7 days after that day ends; no key per event.
        day = day_of(t0)
        await assert_expires_in(redis_client, keys.event_ids(day), (day + 1) * DAY_MS + 7 * DAY_MS - t0)
        assert await redis_client.exists(keys.legacy_event("e1")) == 0
        # An event id recorded before per-day hashes (a marker key) is still a retry.
        await redis_client.set(keys.legacy_event("old"), first, ex=60)
        [legacy] = await store.record_feedback([_event(user, "old", t0)])
        assert legacy == Seen(first, "")  # its flag is read from its entry, compacted away here
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


async def test_decisions_are_joined_from_a_per_day_index_that_expires_after_the_join_horizon(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, clock: Clock
) -> None:
    t0 = clock.at_ms
    join_ms = 8 * DAY_MS
    store = Store(redis_server.url, Retention(logs_seconds=3600, user_state_seconds=3600), join_ms, clock=clock)
    user = pseudonymize("retention-decisions", b"t")
    keys = UserKeys(user)
    decision_id = new_decision_id(t0)
    decision = DecisionRecord(user, decision_id, "s", ("a", "b"), (0.5, 0.5), "ucb1", "v.0", t0, closes_at_ms=t0 + 1)
    legacy = DecisionRecord(user, "f" * 32, "s", ("a",), (1.0,), "ucb1", "v.0", t0)
    await redis_client.hset(keys.legacy_decision_index, legacy.decision_id, legacy.to_json())
    try:
        await store.write_back([decision], {})
        found = await store.find_decisions([(user, decision_id), (user, legacy.decision_id), (user, "nope")])
        assert found == [decision, legacy, None]
        day = decision_day(decision_id)
        assert day == day_of(t0)
        await assert_expires_in(redis_client, keys.decision_index(day), (day + 1) * DAY_MS + join_ms - t0)
        await assert_expires_in(redis_client, keys.decision_log, 3_600_000)
        # Another user cannot join it.
        assert await store.find_decisions([(pseudonymize("other", b"t"), decision_id)]) == [None]
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
