"""Learned ledger entries leave the shard's memory with a snapshot and come back when feedback needs
them (state/settled.py), against a real Redis: the rewards, the window close and a rebuild after a
crash are those of a shard that kept every entry in memory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from rewardloop.learning.rewards import Event, Signal, fuse
from rewardloop.state import settled
from rewardloop.state.keys import UserKeys, new_decision_id, pseudonymize
from rewardloop.state.retention import day_of
from rewardloop.state.snapshots import restore_from_snapshot
from rewardloop.state.store import Snapshot
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.messages import Decision, FeedbackCall, RecommendCall, Recorded
from rewardloop.workers.redis_server import EmbeddedRedis
from rewardloop.workers.shard import ShardCore

REWARD: dict[str, Any] = {"window_seconds": 600}
CONFIG = {
    "service": {"shards": 1},
    "surfaces": {"s": {"algorithm": "ucb1", "items": [f"i{k}" for k in range(8)], "reward": REWARD,
                       "cold_start": {"strength": 0}}},
}  # fmt: skip


@pytest.fixture
async def url(redis_server: EmbeddedRedis) -> str:
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    return url


@contextlib.asynccontextmanager
async def _serving(url: str) -> AsyncIterator[tuple[ServiceConfig, ShardCore, aioredis.Redis]]:
    """A shard of ``CONFIG`` on ``url`` and a client of the same Redis, closed after."""
    config = ServiceConfig.from_dict(CONFIG)
    shard = ShardCore(config, url)
    client = aioredis.Redis.from_url(url)
    try:
        yield config, shard, client
    finally:
        await shard.close()
        await client.aclose()


def later() -> int:
    """A time past the reward window of a decision made now: snapshots then store learned entries apart."""
    return int(time.time() * 1000) + 3_600_000


def _call(user: str, event_id: str, decision: Decision, signal: Signal, value: float, at_ms: int) -> FeedbackCall:
    item = decision.items[0].item_id
    return FeedbackCall(user, event_id, item, signal.value, value, at_ms, decision_id=decision.decision_id)


async def _decide(shard: ShardCore, user: str) -> Decision:
    [decision] = await shard.recommend([RecommendCall(user, "s", 2)])
    assert isinstance(decision, Decision)
    return decision


async def _record(shard: ShardCore, call: FeedbackCall) -> Recorded:
    [recorded] = await shard.feedback([call])
    assert isinstance(recorded, Recorded), recorded
    return recorded


async def test_a_snapshot_stores_learned_entries_and_feedback_brings_them_back(url: str) -> None:
    user = pseudonymize("settled-1", b"t")
    async with _serving(url) as (config, shard, client):
        decision = await _decide(shard, user)
        now = int(time.time() * 1000)
        dwell = _call(user, "dwell", decision, Signal.DWELL, 6.0, now)
        alone = fuse([Event("dwell", Signal.DWELL, 6.0, now, 0)], config.surfaces["s"].reward)
        assert (await _record(shard, dwell)).reward == pytest.approx(alone)
        await shard.flush(later())  # past the window: the snapshot stores it apart; memory drops it
        state = (await shard.users.get({user}))[user]
        assert not state.ledger.items.get("s")
        key = UserKeys(user).settled
        stored = await client.hgetall(key)
        assert len(stored) == 1 and json.loads(next(iter(stored.values())))[0] == 0  # learned first
        assert config.settled_ms - 5_000 < await client.pttl(key) <= config.settled_ms
        # More feedback on the same item: fused with the dwell, learned as a correction of it.
        rating = _call(user, "rating", decision, Signal.RATING, 2.0, now + 1)
        fused = fuse(
            [Event("dwell", Signal.DWELL, 6.0, now, 0), Event("rating", Signal.RATING, 2.0, now + 1, 0)],
            config.surfaces["s"].reward,
        )
        assert (await _record(shard, rating)).reward == pytest.approx(fused)
        assert abs(fused - alone) > 0.1
        learned = await shard.user_state(user)
        assert learned["s"]["n_updates"] == 1  # one observation, revised
        assert sum(learned["s"]["reward_sums"]) == pytest.approx(fused)
        # A retry of the dwell, once its entry is stored apart again, answers the fused reward.
        await shard.flush(later())
        assert not (await shard.users.get({user}))[user].ledger.items.get("s")
        retry = await _record(shard, dwell)
        assert retry.duplicate and retry.reward == pytest.approx(fused)


async def test_within_its_window_a_learned_entry_stays_in_memory_and_in_the_snapshot(url: str) -> None:
    """Feedback within the window and the window close find the entry in memory: no fetch."""
    user = pseudonymize("settled-in-window", b"t")
    async with _serving(url) as (config, shard, client):
        decision = await _decide(shard, user)
        await _record(shard, _call(user, "click", decision, Signal.CLICK, 1.0, int(time.time() * 1000)))
        await shard.flush()
        assert (await shard.users.get({user}))[user].ledger.items["s"]
        assert not await client.exists(UserKeys(user).settled)
        blob = await shard.store.load_snapshot(user)
        assert blob is not None
        restored = restore_from_snapshot(blob, user, shard.policies, config.surfaces, config.seed)
        assert len(restored.ledger.items["s"]) == 1 and not restored.ledger.may_be_settled(
            config.surfaces["s"], decision.decision_id, decision.items[0].item_id, int(time.time() * 1000)
        )


async def test_entries_stored_by_day_or_past_their_horizon(url: str) -> None:
    """An entry an earlier version stored in a per-day hash is still fetched; the user's hash is
    pruned of entries whose decision is past ``settled_ms``."""
    user = pseudonymize("settled-by-day", b"t")
    keys = UserKeys(user)
    async with _serving(url) as (config, shard, client):
        decision = await _decide(shard, user)
        now = int(time.time() * 1000)
        await _record(shard, _call(user, "dwell", decision, Signal.DWELL, 6.0, now))
        await shard.flush(later())
        [(name, value)] = (await client.hgetall(keys.settled)).items()
        key, surface, fingerprint = name.decode().split(" ")
        await client.delete(keys.settled)
        await client.hset(keys.day_settled(day_of(now)), f"{surface} {fingerprint} {key}", value)
        rating = _call(user, "rating", decision, Signal.RATING, 2.0, now + 1)
        events = [Event("dwell", Signal.DWELL, 6.0, now, 0), Event("rating", Signal.RATING, 2.0, now + 1, 0)]
        assert (await _record(shard, rating)).reward == pytest.approx(fuse(events, config.surfaces["s"].reward))
        assert (await shard.user_state(user))["s"]["n_updates"] == 1  # the stored entry, revised
        # Entries of decisions older than settled_ms go at the next prune; newer ones stay.
        await shard.flush(later())
        old = {f"{new_decision_id(now - config.settled_ms - k)}/i0 s x".encode(): b"[0,[]]" for k in range(1, 40)}
        await client.hset(keys.settled, mapping=old)
        await _record(shard, _call(user, "like", decision, Signal.LIKE, 1.0, now + 2))
        await shard.flush(later())
        left = set(await client.hkeys(keys.settled)) - {b""}
        assert len(left) == 1 and not left & set(old)


async def test_a_closed_window_does_not_learn_a_stored_entry_again(url: str) -> None:
    config = ServiceConfig.from_dict({**CONFIG, "surfaces": {"s": {**CONFIG["surfaces"]["s"], "reward": {
        "window_seconds": 1, "default_reward": 0.25}}}})  # fmt: skip
    user = pseudonymize("settled-2", b"t")
    shard = ShardCore(config, url)
    try:
        decision = await _decide(shard, user)
        await _record(shard, _call(user, "click", decision, Signal.CLICK, 1.0, int(time.time() * 1000)))
        await shard.flush(later())
        assert not (await shard.users.get({user}))[user].ledger.items.get("s")
        await asyncio.sleep(1.2)
        await shard.close_due_windows(int(time.time() * 1000) + 1_000)  # if the shard's own loop did not yet
        # The clicked item was learned (stored apart; the close fetched it back and left it alone);
        # the other item of the slate learned the default.
        ledger = (await shard.users.get({user}))[user].ledger.items["s"]
        assert sorted(item.step for item in ledger.values()) == [0, 1]
        learned = (await shard.user_state(user))["s"]
        assert learned["n_updates"] == 2 and sum(learned["reward_sums"]) == pytest.approx(1.25)
    finally:
        await shard.close()


async def test_a_slates_defaults_are_stored_as_one_field_that_late_feedback_finds(url: str) -> None:
    """A slate of five, one clicked: the four items the window close taught the default are stored
    as one field of ``arm:step`` pairs for the decision, the clicked one as its own; a late click on
    one of the four fetches its pair back and corrects that observation."""
    config = ServiceConfig.from_dict({**CONFIG, "surfaces": {"s": {**CONFIG["surfaces"]["s"], "reward": {
        "window_seconds": 1, "default_reward": 0.25}}}})  # fmt: skip
    user = pseudonymize("settled-slate", b"t")
    surface, keys = config.surfaces["s"], UserKeys(user)
    shard = ShardCore(config, url)
    client = aioredis.Redis.from_url(url)
    try:
        [decision] = await shard.recommend([RecommendCall(user, "s", 5)])
        assert isinstance(decision, Decision)
        await _record(shard, _call(user, "click", decision, Signal.CLICK, 1.0, int(time.time() * 1000)))
        await asyncio.sleep(1.2)
        await shard.close_due_windows(int(time.time() * 1000) + 1_000)
        await shard.flush(later())
        assert not (await shard.users.get({user}))[user].ledger.items.get("s")
        stored = {k.decode(): v for k, v in (await client.hgetall(keys.settled)).items() if k}
        clicked, *shown = (i.item_id for i in decision.items)
        defaults = settled.defaults_field(surface, decision.decision_id)
        assert sorted(stored) == sorted([settled.field(surface, f"{decision.decision_id}/{clicked}"), defaults])
        steps = settled.default_steps(stored[defaults])
        assert sorted(steps) == sorted(surface.index[i] for i in shown) and sorted(steps.values()) == [1, 2, 3, 4]

        late = FeedbackCall(user, "late", shown[1], Signal.CLICK.value, 1.0, int(time.time() * 1000),
                            decision_id=decision.decision_id)  # fmt: skip
        assert (await _record(shard, late)).reward == 1.0
        learned = (await shard.user_state(user))["s"]
        assert learned["n_updates"] == 5 and sum(learned["reward_sums"]) == pytest.approx(2.0 + 3 * 0.25)
        assert learned["reward_sums"][surface.index[shown[1]]] == 1.0  # the default, corrected
        await shard.flush(later())
        assert settled.field(surface, f"{decision.decision_id}/{shown[1]}").encode() in await client.hkeys(keys.settled)
    finally:
        await shard.close()
        await client.aclose()


async def test_later_snapshots_append_to_a_decisions_defaults(url: str) -> None:
    """A snapshot appends its pairs to the decision's field: what an earlier one stored stays."""
    user = pseudonymize("settled-append", b"t")
    field = f"{new_decision_id(int(time.time() * 1000))} s 0123456789ab"
    async with _serving(url) as (_, shard, client):
        await shard.store.write_back([], {user: Snapshot(b"one", "1-0", defaults={field: b"1:5,2:6"})})
        await shard.store.write_back([], {user: Snapshot(b"two", "2-0", defaults={field: b"4:9"})})
        value = await client.hget(UserKeys(user).settled, field)
        assert value == b"1:5,2:6,4:9" and settled.default_steps(value) == {1: 5, 2: 6, 4: 9}


async def test_a_rebuild_after_a_crash_fetches_what_the_replay_needs(url: str) -> None:
    """Snapshot (entry stored apart), then more feedback on the entry, then the shard dies before its
    next snapshot: the new shard replays that feedback onto the stored entry, as the live one did."""
    config = ServiceConfig.from_dict(CONFIG)
    users = [pseudonymize(f"settled-crash-{k}", b"t") for k in range(6)]
    live = ShardCore(config, url)
    now = int(time.time() * 1000)
    decisions = [await _decide(live, user) for user in users]
    for k, (user, decision) in enumerate(zip(users, decisions, strict=True)):
        await _record(live, _call(user, "click", decision, Signal.CLICK, float(k % 2), now))
    await live.flush(later())
    for k, (user, decision) in enumerate(zip(users, decisions, strict=True)):
        await _record(live, _call(user, "dwell", decision, Signal.DWELL, 5.0 + k, now + 10))
        await _record(live, _call(user, "like", decision, Signal.LIKE, 1.0, now + 20))
    expected = [await live.user_state(u) for u in users]
    await live.write_behind.drain()  # decisions only: no snapshot was queued since the flush
    await _die(live)
    reborn = ShardCore(config, url)
    try:
        assert [await reborn.user_state(u) for u in users] == expected
        for user in users:  # the replay needed each user's stored entry back
            assert len((await reborn.users.get({user}))[user].ledger.items["s"]) == 1
    finally:
        await reborn.close()


async def _die(shard: ShardCore) -> None:
    """Stop the shard as a crash would: its background work ends, nothing more is written."""
    await shard.stop_background()
    await shard.store.close()
