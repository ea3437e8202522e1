"""Experiment metrics count each event once: across a shard that dies after logging an event and
before attributing it (the caller's retry attributes it), and across retries of events already
attributed. A shard on a real Redis; the death is the shard's attribution call failing mid-way."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rewardloop.learning.experiments import lifecycle
from rewardloop.learning.experiments.buckets import BUCKETS
from rewardloop.learning.experiments.spec import ExperimentSpec, spec_from_dict
from rewardloop.learning.rewards import Signal
from rewardloop.state.experiment_metrics import Exposures, read_stats
from rewardloop.state.experiments import ExperimentStore
from rewardloop.state.keys import pseudonymize
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.messages import Decision, FeedbackCall, RecommendCall, Recorded
from rewardloop.workers.redis_server import EmbeddedRedis
from rewardloop.workers.shard import ShardCore
from tests.conftest import ITEMS

DB = 12
NAME = "attribution-once"
CONFIG = {
    "service": {"shards": 1, "seed": 3, "quality": {"burst_per_second": 1_000_000, "burst_per_minute": 1_000_000}},
    "surfaces": {"s": {"algorithm": "ucb1", "items": ITEMS[:4]}},
}


def _spec() -> ExperimentSpec:
    return spec_from_dict(NAME, {
        "variants": {"control": 1, "treatment": 1}, "surfaces": ["s"],
        "primary_metric": {"source": "click", "aggregate": "count"},
    })  # fmt: skip


async def _started_and_exposed(redis_server: EmbeddedRedis, name: str) -> tuple[str, str]:
    """A fresh database with the experiment running and the user exposed to its treatment: (url, user)."""
    url = redis_server.url.rsplit("/", 1)[0] + f"/{DB}"
    user = pseudonymize(name, b"k")
    spec = _spec()
    async with aioredis.Redis.from_url(url) as redis:
        await redis.flushdb()
        store = ExperimentStore(redis)
        await store.apply(NAME, "test", lambda _: lifecycle.create(spec, 1))
        started = await store.apply(
            NAME, "test", lambda experiments: lifecycle.start(experiments[NAME], np.ones(BUCKETS, dtype=bool), 2)
        )
        assert started is not None
        now_ms = int(time.time() * 1000)
        assert await Exposures(redis).expose(user, [(NAME, "treatment")], now_ms, {NAME: started.created_ms}) == [True]
    return url, user


async def _clicks(url: str) -> tuple[float, float]:
    async with aioredis.Redis.from_url(url) as redis:
        return (await read_stats(redis, NAME))["treatment"].metrics.get("click_count", (0.0, 0.0))


async def test_a_retry_attributes_what_a_dead_shard_did_not_and_nothing_twice(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, user = await _started_and_exposed(redis_server, "attributed-user")
    config = ServiceConfig.from_dict(CONFIG)

    first = ShardCore(config, url)
    [decision] = await first.recommend([RecommendCall(user, "s", 1)])
    assert isinstance(decision, Decision)
    item = decision.items[0].item_id

    def click(event_id: str) -> FeedbackCall:
        return FeedbackCall(user, event_id, item, Signal.CLICK.value, 1.0, int(time.time() * 1000),
                            decision_id=decision.decision_id)  # fmt: skip

    [recorded] = await first.feedback([click("e1")])
    assert isinstance(recorded, Recorded) and not recorded.duplicate
    assert await _clicks(url) == (1.0, 1.0)  # one user, one click

    async def dies(records: Any) -> None:
        raise ConnectionError("the shard's process died")

    monkeypatch.setattr(first.ingest, "_on_learned", dies)  # logged and learned, never attributed
    with pytest.raises(ConnectionError):
        await first.feedback([click("e2")])
    assert await _clicks(url) == (1.0, 1.0)
    await first.stop_background()
    await first.write_behind.drain()
    await first.store.close()

    second = ShardCore(config, url)
    try:
        # The caller retries: the event is a duplicate of the logged one, and counted now.
        [retried] = await second.feedback([click("e2")])
        assert isinstance(retried, Recorded) and retried.duplicate
        assert await _clicks(url) == (2.0, 4.0)  # the user's count went 1 -> 2
        # Retries of events already attributed count nothing again.
        for event_id in ("e2", "e1", "e2"):
            [again] = await second.feedback([click(event_id)])
            assert isinstance(again, Recorded) and again.duplicate
        assert await _clicks(url) == (2.0, 4.0)
        [third] = await second.feedback([click("e3")])
        assert isinstance(third, Recorded) and not third.duplicate
        assert await _clicks(url) == (3.0, 9.0)
        assert second.stats()["attribution_failed"] == 0
    finally:
        await second.close()


async def test_an_attribution_redis_refuses_fails_the_call_and_its_retry_counts_it(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rewardloop.workers.experiment_metrics as attribution

    url, user = await _started_and_exposed(redis_server, "refused-user")
    shard = ShardCore(ServiceConfig.from_dict(CONFIG), url)
    try:
        [decision] = await shard.recommend([RecommendCall(user, "s", 1)])
        assert isinstance(decision, Decision)
        call = FeedbackCall(user, "r1", decision.items[0].item_id, Signal.CLICK.value, 1.0, int(time.time() * 1000),
                            decision_id=decision.decision_id)  # fmt: skip
        original = attribution.record_updates

        async def refused(*args: Any, **kwargs: Any) -> None:
            monkeypatch.setattr(attribution, "record_updates", original)  # once
            raise RedisError("OOM command not allowed when used memory > 'maxmemory'")

        monkeypatch.setattr(attribution, "record_updates", refused)
        with pytest.raises(attribution.AttributionFailed) as failed:
            await shard.feedback([call])
        assert "OOM" not in str(failed.value)  # the event was logged: not "nothing was applied"
        assert shard.stats()["attribution_failed"] == 1
        assert (await _clicks(url)) == (0.0, 0.0)
        [retried] = await shard.feedback([call])
        assert isinstance(retried, Recorded) and retried.duplicate
        assert await _clicks(url) == (1.0, 1.0)
    finally:
        await shard.close()


async def test_a_shard_that_saw_the_experiment_as_a_draft_still_counts_its_first_events(
    redis_server: EmbeddedRedis,
) -> None:
    """The shard's catalogue refresh came between the experiment's creation and its start; the front
    exposed the user since. The user's first click is attributed (it was skipped, the mark moved past it)."""
    url = redis_server.url.rsplit("/", 1)[0] + f"/{DB}"
    user = pseudonymize("drafted-user", b"k")
    spec = _spec()
    async with aioredis.Redis.from_url(url) as redis:
        await redis.flushdb()
        await ExperimentStore(redis).apply(NAME, "test", lambda _: lifecycle.create(spec, 1))
    shard = ShardCore(ServiceConfig.from_dict(CONFIG), url)
    try:
        [decision] = await shard.recommend([RecommendCall(user, "s", 1)])  # its catalogue: the draft
        assert isinstance(decision, Decision)
        assert shard.experiments.catalog.experiments[NAME].status == lifecycle.DRAFT
        async with aioredis.Redis.from_url(url) as redis:
            started = await ExperimentStore(redis).apply(
                NAME, "test", lambda experiments: lifecycle.start(experiments[NAME], np.ones(BUCKETS, dtype=bool), 2)
            )
            assert started is not None
            now_ms = int(time.time() * 1000)
            assert await Exposures(redis).expose(user, [(NAME, "treatment")], now_ms, {NAME: started.created_ms}) == [
                True
            ]
        call = FeedbackCall(user, "d1", decision.items[0].item_id, Signal.CLICK.value, 1.0, int(time.time() * 1000),
                            decision_id=decision.decision_id)  # fmt: skip
        [recorded] = await shard.feedback([call])
        assert isinstance(recorded, Recorded) and not recorded.duplicate
        assert await _clicks(url) == (1.0, 1.0)
    finally:
        await shard.close()
