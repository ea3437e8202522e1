"""The reward engine through the real service (gRPC front, Ray shards, Redis): fused rewards,
delayed joins, retries and reordering, quality flags, window close; and the shard's burst rule
on a shard of its own with a low limit."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import ray

from rewardloop.client import AsyncClient, FeedbackEvent, Signal
from rewardloop.state.keys import UserKeys, pseudonymize, shard_for
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.messages import FeedbackCall, RecommendCall, Recorded
from rewardloop.workers.redis_server import EmbeddedRedis
from rewardloop.workers.shard import ShardCore
from tests.integration.test_recovery import _incarnation, _restarted

pytestmark = pytest.mark.cluster


@pytest.fixture
async def client(service: Any) -> Any:
    async with AsyncClient(service.target, default_timeout=30) as c:
        yield c


async def _state(service: Any, config: ServiceConfig, user: str, surface: str) -> dict[str, Any]:
    states = await service.router.user_state(pseudonymize(user, config.pseudonym_key.encode()))
    return dict(states[surface])


def _features(seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    names = [f"u{k}" for k in range(6)] + ["c0", "c1"]
    return {name: round(float(v), 3) for name, v in zip(names, rng.normal(size=8), strict=True)}


async def test_delayed_feedback_trains_with_its_own_decisions_context_and_action(
    client: AsyncClient, service: Any, service_config: ServiceConfig
) -> None:
    user, surface = "delayed-join", "ctx_linucb"
    first = await client.recommend(user, surface, context=_features(1))
    later = [await client.recommend(user, surface, context=_features(k)) for k in (2, 3, 4)]
    assert len({r.decision_id for r in [first, *later]}) == 4
    result = await client.record(user, first.items[0].item_id, Signal.CLICK, 1.0, decision_id=first.decision_id)
    assert (result.reward, result.flag) == (1.0, "")

    state = await _state(service, service_config, user, surface)
    arm = service_config.surfaces[surface].index[first.items[0].item_id]
    x = np.array([1.0, *_features(1).values()])  # the schema's order: bias, u0..u5, c0, c1
    assert state["n_updates"] == 1
    np.testing.assert_array_equal(state["xr"][arm], x)  # reward 1 times D's context, not the last one's
    np.testing.assert_array_equal(state["gram"][arm], np.outer(x, x))  # exact: products only, no sums
    assert sum(state["counts"]) == state["counts"][arm] == 1.0


async def test_signals_of_one_decision_fuse_into_one_observation_that_later_feedback_corrects(
    client: AsyncClient, service: Any, service_config: ServiceConfig
) -> None:
    user, surface = "fusion", "fused"
    rec = await client.recommend(user, surface)
    item = rec.items[0].item_id
    arm = service_config.surfaces[surface].index[item]

    async def send(signal: Signal, value: float, event_id: str) -> float:
        result = await client.record(user, item, signal, value, decision_id=rec.decision_id, event_id=event_id)
        assert result.flag == ""
        return result.reward

    # impression: weight 0, nothing learned; click 1; dwell 15 s (0.5 * 0.5); skip (-0.5); a retry of it.
    assert [
        await send(Signal.IMPRESSION, 1.0, "f-imp"),
        await send(Signal.CLICK, 1.0, "f-click"),
        await send(Signal.DWELL, 15.0, "f-dwell"),
        await send(Signal.SKIP, 1.0, "f-skip"),
        await send(Signal.SKIP, 1.0, "f-skip"),
    ] == [0.25, 1.0, 1.0, 0.75, 0.75]  # default; 1; clip(1.25); 1.25 - 0.5; duplicate
    state = await _state(service, service_config, user, surface)
    assert state["n_updates"] == 1 and state["counts"][arm] == 1.0  # one observation, corrected twice
    assert state["reward_sums"][arm] == 0.75


async def test_retries_and_reordering_end_in_the_state_of_an_in_order_exactly_once_run(
    client: AsyncClient, service: Any, service_config: ServiceConfig
) -> None:
    surface = "fused"
    items = service_config.surfaces[surface].items
    # Signals whose contributions are dyadic, so that any summation order is exact.
    signals = [(Signal.CLICK, 1.0), (Signal.DWELL, 15.0), (Signal.SKIP, 1.0), (Signal.LIKE, 1.0), (Signal.LIKE, 0.0),
               (Signal.RATING, 3.0), (Signal.COMPLETION, 0.25), (Signal.DISLIKE, 1.0), (Signal.CLICK, 0.0)]  # fmt: skip
    rng = random.Random(7)
    start = datetime.now(UTC) - timedelta(seconds=10)
    plan = []  # per decision: its item, then (event suffix, signal, value, seconds after start)
    for k in range(12):
        chosen = rng.sample(signals, rng.randint(1, 4))
        plan.append((items[k % len(items)], [(f"{k}-{j}", s, v, k + 0.1 * j) for j, (s, v) in enumerate(chosen)]))

    async def run(user: str, shuffle: bool) -> dict[str, Any]:
        events = []
        for item, feedback in plan:
            rec = await client.recommend(user, surface, candidates=[item])
            events += [
                FeedbackEvent(user, item, s, v, decision_id=rec.decision_id, event_id=f"{user}:{suffix}",
                              occurred_at=start + timedelta(seconds=t))
                for suffix, s, v, t in feedback
            ]  # fmt: skip
        if shuffle:
            events += rng.sample(events, len(events) // 2)  # retries, some before their original
            rng.shuffle(events)
            batches = [events[i : i + 5] for i in range(0, len(events), 5)]
        else:
            batches = [[e] for e in events]
        for batch in batches:
            results = await client.record_batch(batch)
            assert all(r.ok and not r.flag for r in results)
        return await _state(service, service_config, user, surface)

    in_order = await run("order-a", shuffle=False)
    shuffled = await run("order-b", shuffle=True)
    assert in_order["n_updates"] == shuffled["n_updates"] == len(plan)
    assert in_order == shuffled
    assert sum(in_order["reward_sums"]) > 0  # the plan did teach something


async def test_flagged_feedback_is_kept_but_trains_nothing(
    client: AsyncClient, service: Any, service_config: ServiceConfig, redis_server: EmbeddedRedis
) -> None:
    user, surface = "flags", "ucb"
    item = service_config.surfaces[surface].items[0]
    unknown = await client.record(
        user, item, Signal.CLICK, 1.0, decision_id="no-such-decision", surface=surface, event_id="flags-1"
    )
    # A retry (say, after a lost answer) is told what the original came to: flagged, not trained.
    retried = await client.record(
        user, item, Signal.CLICK, 1.0, decision_id="no-such-decision", surface=surface, event_id="flags-1"
    )
    assert (retried.duplicate, retried.reward, retried.flag) == (True, 0.0, unknown.flag)
    old = await client.record(
        user, item, Signal.CLICK, 1.0, surface=surface, occurred_at=datetime.now(UTC) - timedelta(days=8)
    )
    assert unknown.flag == "decision_id: unknown decision for this user"
    assert old.flag.startswith("occurred_at: ") and "before receipt" in old.flag
    assert (unknown.reward, old.reward) == (0.0, 0.0)
    state = await _state(service, service_config, user, surface)
    assert state["n_updates"] == 0
    import redis

    log = redis.Redis.from_url(redis_server.url).xrange(UserKeys(pseudonymize(user, b"test-key")).feedback_log)
    assert [fields[b"q"].decode() for _, fields in log] == [unknown.flag, old.flag]  # kept, with the reason


async def test_late_feedback_is_recorded_and_trains_per_the_surfaces_late_rule(
    client: AsyncClient, service: Any, service_config: ServiceConfig
) -> None:
    # Both windows are at most 1 s, so events occurring 2 minutes on are late.
    for surface, trains in (("late_ignored", False), ("fused", True)):
        user = f"late-{surface}"
        rec = await client.recommend(user, surface)
        late = datetime.now(UTC) + timedelta(minutes=2)
        result = await client.record(user, rec.items[0].item_id, Signal.CLICK, 1.0, decision_id=rec.decision_id)
        state = await _state(service, service_config, user, surface)
        assert state["n_updates"] == 1 and result.flag == ""
        again = await client.record(
            user, rec.items[0].item_id, Signal.LIKE, 0.0, decision_id=rec.decision_id, occurred_at=late
        )
        # A withdrawn like adds nothing; a dislike (weight -1) takes the fused reward from 1 to 0.
        rating = await client.record(
            user, rec.items[0].item_id, Signal.DISLIKE, 1.0, decision_id=rec.decision_id, occurred_at=late,
            event_id=f"{user}-rating",
        )  # fmt: skip
        retried = await client.record(
            user, rec.items[0].item_id, Signal.DISLIKE, 1.0, decision_id=rec.decision_id, occurred_at=late,
            event_id=f"{user}-rating",
        )  # fmt: skip
        assert retried.duplicate and (retried.reward, retried.flag) == (rating.reward, rating.flag)
        state = await _state(service, service_config, user, surface)
        if trains:
            assert (again.flag, rating.flag) == ("", "") and rating.reward == 0.0
            assert max(state["reward_sums"]) == 0.0  # 1 + 0 - 1, learned as a correction
        else:
            assert again.flag.startswith("late: ") and rating.flag.startswith("late: ")
            assert max(state["reward_sums"]) == 1.0
        assert state["n_updates"] == 1


async def test_an_item_with_only_an_impression_learns_the_default_reward_when_its_window_closes(
    client: AsyncClient, service: Any, service_config: ServiceConfig
) -> None:
    user, surface = "window-close", "fused"
    items = service_config.surfaces[surface].items
    shown = await client.recommend(user, surface, candidates=[items[0]])
    await client.record(user, items[0], Signal.IMPRESSION, 1.0, decision_id=shown.decision_id)
    assert (await _state(service, service_config, user, surface))["n_updates"] == 0
    await asyncio.sleep(0.6)  # the surface's window is 0.5 s
    other = await client.recommend(user, surface, candidates=[items[1]])
    await client.record(user, items[1], Signal.CLICK, 1.0, decision_id=other.decision_id)
    state = await _state(service, service_config, user, surface)
    assert state["n_updates"] == 2
    assert (state["counts"][0], state["reward_sums"][0]) == (1.0, 0.25)  # the surface's default_reward
    assert (state["counts"][1], state["reward_sums"][1]) == (1.0, 1.0)


async def test_bursts_no_human_makes_are_flagged_and_kept(redis_server: EmbeddedRedis) -> None:
    config = ServiceConfig.from_dict(
        {
            "service": {"shards": 1, "quality": {"burst_per_second": 3, "burst_per_minute": 100}},
            "surfaces": {"s": {"algorithm": "ucb1", "items": ["a", "b"]}},
        }
    )
    shard = ShardCore(config, redis_server.url)
    user = pseudonymize("burst-user", config.pseudonym_key.encode())
    try:
        [decision] = await shard.recommend([RecommendCall(user, "s", 1)])
        now = int(datetime.now(UTC).timestamp() * 1000)
        calls = [
            FeedbackCall(user, f"b{k}", decision.items[0].item_id, Signal.CLICK.value, 1.0, now + k,
                         decision_id=decision.decision_id)
            for k in range(5)
        ]  # fmt: skip
        results = await shard.feedback(calls)
        retried = await shard.feedback(calls[:1])  # a retry is no action: the detector does not count it
        later = await shard.feedback([FeedbackCall(user, "b9", "a", Signal.CLICK.value, 0.0, now + 5_000,
                                                   surface="s")])  # fmt: skip
        state = await shard.user_state(user)
    finally:
        await shard.close()
    assert all(isinstance(r, Recorded) for r in [*results, *retried, *later])
    flags = [r.flag for r in results]  # type: ignore[union-attr]
    assert flags[:3] == ["", "", ""] and all(f.startswith("burst: more than 3 actions in 1 s") for f in flags[3:])
    assert retried[0].duplicate and later[0].flag == ""  # type: ignore[union-attr]
    assert state["s"]["n_updates"] == 2  # the decision's fused click, and the later event


async def test_old_evidence_fades_with_the_half_life_and_a_rebuilt_shard_agrees(
    client: AsyncClient, service: Any, service_config: ServiceConfig
) -> None:
    """Item 0 was loved five days ago and is ignored now; item 1 gets half the clicks now. With a
    one-hour half-life the past is forgotten and item 1 wins; without decay item 0 still does."""
    user, (loved, steady) = "decay-user", service_config.surfaces["decayed"].items
    five_days_ago = datetime.now(UTC) - timedelta(days=5)

    def minutes(k: int) -> timedelta:
        return timedelta(minutes=k)

    for surface in ("decayed", "undecayed"):
        past = [
            FeedbackEvent(user, loved, Signal.CLICK, 1.0, surface=surface, occurred_at=five_days_ago + minutes(k))
            for k in range(20)
        ]
        now = [FeedbackEvent(user, loved, Signal.CLICK, 0.0, surface=surface) for _ in range(5)]
        now += [FeedbackEvent(user, steady, Signal.CLICK, float(k % 2), surface=surface) for k in range(4)]
        results = await client.record_batch(past + now)
        assert [r.flag for r in results] == [""] * 29
    decayed, undecayed = await client.recommend(user, "decayed"), await client.recommend(user, "undecayed")
    assert (decayed.items[0].item_id, undecayed.items[0].item_id) == (steady, loved)

    state = await _state(service, service_config, user, "decayed")
    plain = await _state(service, service_config, user, "undecayed")
    assert plain["counts"] == [25.0, 4.0] and plain["reward_sums"] == [20.0, 2.0]
    assert state["n_updates"] == 29
    # The state's epoch moved to today: five days is 120 half-lives, so the past weighs 2^-120.
    np.testing.assert_allclose(state["counts"], [5.0, 4.0], rtol=1e-6)
    assert 0.0 < state["reward_sums"][0] < 1e-30

    # Kill the user's shard: rebuilt from snapshot + log, it holds the same decayed state.
    pseudonym = pseudonymize(user, service_config.pseudonym_key.encode())
    shard = service.router.shard_of(pseudonym)
    incarnation = await _incarnation(service, shard)
    ray.kill(service.actors[shard], no_restart=False)
    await _restarted(service, shard, incarnation)
    assert await _state(service, service_config, user, "decayed") == state
    again = await client.recommend(user, "decayed")
    assert again.items[0].item_id == steady


async def test_a_decision_item_without_feedback_learns_the_default_when_its_window_closes(
    client: AsyncClient, service: Any, service_config: ServiceConfig, redis_server: EmbeddedRedis
) -> None:
    """A slate of three on the 0.5 s window surface: the clicked item learns its click, the other two
    the default reward once the window is over (one logged close entry for the decision, listing
    them), and feedback after that corrects the default like any later feedback."""
    import redis

    user, surface = "closes", "fused"
    config = service_config.surfaces[surface]
    rec = await client.recommend(user, surface, n=3)
    clicked, ignored, other = (item.item_id for item in rec.items)
    await client.record(user, clicked, Signal.CLICK, 1.0, decision_id=rec.decision_id)
    state = await _wait_for_updates(service, service_config, user, surface, 3)
    arms = config.index[clicked], config.index[ignored], config.index[other]
    assert [state["reward_sums"][a] for a in arms] == [1.0, 0.25, 0.25] and state["n_updates"] == 3
    log = redis.Redis.from_url(redis_server.url).xrange(UserKeys(pseudonymize(user, b"test-key")).feedback_log)
    closes = [fields for _, fields in log if fields.get(b"k") == b"close"]
    assert [(f[b"e"].decode(), [i for i, _ in json.loads(f[b"c"])]) for f in closes] == [
        (f"window-close:{rec.decision_id}", [ignored, other])
    ]

    late = await client.record(user, ignored, Signal.CLICK, 1.0, decision_id=rec.decision_id)
    assert (late.flag, late.reward) == ("", 1.0)
    state = await _state(service, service_config, user, surface)
    assert [state["reward_sums"][a] for a in arms] == [1.0, 1.0, 0.25] and state["n_updates"] == 3  # corrected
    shard = service.actors[service.router.shard_of(pseudonymize(user, b"test-key"))]
    await shard.close_due_windows.remote(int(datetime.now(UTC).timestamp() * 1000) + 10_000)
    assert await _state(service, service_config, user, surface) == state  # nothing left to close, ever


async def test_open_windows_survive_a_crash_of_their_shard(
    client: AsyncClient, service: Any, service_config: ServiceConfig, redis_client: Any
) -> None:
    user, surface = "closes-after-crash", "fused"
    pseudonym = pseudonymize(user, service_config.pseudonym_key.encode())
    rec = await client.recommend(user, surface)
    shard = service.router.shard_of(pseudonym)
    member = f"{pseudonym}:{rec.decision_id}"
    for _ in range(100):  # the decision and its open window are written behind
        if redis_client.zscore(f"rl:windows:{shard}", member) is not None:
            break
        await asyncio.sleep(0.02)
    incarnation = await _incarnation(service, shard)
    ray.kill(service.actors[shard], no_restart=False)
    await _restarted(service, shard, incarnation)  # the new incarnation's first call starts its timer
    state = await _wait_for_updates(service, service_config, user, surface, 1)
    assert state["reward_sums"][service_config.surfaces[surface].index[rec.items[0].item_id]] == 0.25
    assert redis_client.zscore(f"rl:windows:{shard}", member) is None  # closed, and forgotten


async def _wait_for_updates(
    service: Any, config: ServiceConfig, user: str, surface: str, n_updates: int
) -> dict[str, Any]:
    for _ in range(100):
        state = await _state(service, config, user, surface)
        if state["n_updates"] >= n_updates:
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"{user} did not reach {n_updates} updates on {surface}: {state}")


async def test_windows_of_users_another_shard_owns_are_handed_over(redis_server: EmbeddedRedis) -> None:
    """After a change of shard count, a shard finds windows of users it no longer owns in its key."""
    import redis

    config = ServiceConfig.from_dict(
        {"service": {"shards": 2}, "surfaces": {"s": {"algorithm": "ucb1", "items": ["a"]}}}
    )
    owned_by_1 = next(p for p in (pseudonymize(f"u{k}", b"k") for k in range(50)) if shard_for(p, 2) == 1)
    client = redis.Redis.from_url(redis_server.url)
    client.delete("rl:windows:0", "rl:windows:1")
    client.zadd("rl:windows:0", {f"{owned_by_1}:d-moved": 1_000})
    shard = ShardCore(config, redis_server.url, shard_index=0)
    try:
        assert await shard.close_due_windows(now_ms=2_000) == 0
    finally:
        await shard.close()
    assert client.zrange("rl:windows:0", 0, -1) == []
    assert client.zrange("rl:windows:1", 0, -1, withscores=True) == [(f"{owned_by_1}:d-moved".encode(), 1_000.0)]
