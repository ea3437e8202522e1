"""Real-time features as context, through the real service: the vector a decision was made with
(read back from its record in Redis) holds the user's activity before it, and a shard rebuilt
after a crash computes the same features from the logs."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import ray
import redis

from rewardloop.client import AsyncClient, Signal
from rewardloop.learning.features.realtime import ActivityEvent
from rewardloop.state.keys import UserKeys, pseudonymize
from rewardloop.state.records import DecisionRecord
from rewardloop.workers.config import ServiceConfig
from tests.conftest import RT_FEATURES
from tests.integration.test_recovery import _incarnation, _restarted

pytestmark = pytest.mark.cluster
SURFACE = "rt_linucb"


async def _decisions(redis_client: redis.Redis, pseudonym: str, count: int) -> list[DecisionRecord]:
    """The user's decision records once `count` of them are written behind."""
    for _ in range(200):
        raw: Any = redis_client.xrange(UserKeys(pseudonym).decision_log)
        if len(raw) >= count:
            return [DecisionRecord.from_json(pseudonym, fields[b"j"]) for _, fields in raw]
        await asyncio.sleep(0.02)
    raise AssertionError("decisions were not written behind")


def _expected(config: ServiceConfig, events: list[ActivityEvent], now_ms: int) -> list[float]:
    realtime, schema = config.realtime, config.surfaces[SURFACE].features
    activity = realtime.new_state()
    for event in events:
        realtime.observe(activity, event)
    return schema.realtime_vector(realtime, activity, now_ms).tolist()


async def test_decisions_carry_the_users_activity_and_a_rebuilt_shard_agrees(
    service: Any, service_config: ServiceConfig, redis_client: redis.Redis
) -> None:
    user = "rt-user"
    pseudonym = pseudonymize(user, service_config.pseudonym_key.encode())
    assert service_config.surfaces[SURFACE].features.names[-len(RT_FEATURES) :] == tuple(
        f"rt:{name}" for name in RT_FEATURES
    )
    async with AsyncClient(service.target, default_timeout=30) as client:
        first = await client.recommend(user, SURFACE, context={"x": 0.5})
        clicked_at = datetime.now(UTC) - timedelta(seconds=1)
        fb = await client.record(user, first.items[0].item_id, Signal.CLICK, 1.0, decision_id=first.decision_id,
                                 occurred_at=clicked_at)  # fmt: skip
        skipped = await client.record(user, first.items[0].item_id, Signal.CLICK, 0.0, surface=SURFACE)
        assert (fb.reward, fb.flag, skipped.flag) == (1.0, "", "")
        second = await client.recommend(user, SURFACE, context={"x": -1.0})
        d1, d2 = await _decisions(redis_client, pseudonym, 2)
        assert (d1.decision_id, d2.decision_id) == (first.decision_id, second.decision_id)

        # The first decision saw no activity; the second saw the first and both feedback events.
        assert d1.features[:2] == (1.0, 0.5) and d2.features[:2] == (1.0, -1.0)
        np.testing.assert_allclose(d1.features[2:], _expected(service_config, [], d1.decided_at_ms), rtol=1e-12)
        clicked_ms = int(clicked_at.timestamp() * 1000)
        seen = [ActivityEvent(d1.decided_at_ms, "decision"), ActivityEvent(clicked_ms, "feedback", True)]
        skipped_ms = _feedback_times(redis_client, pseudonym)[-1]
        seen.append(ActivityEvent(skipped_ms, "feedback", False))
        np.testing.assert_allclose(d2.features[2:], _expected(service_config, seen, d2.decided_at_ms), rtol=1e-12)
        decisions, feedback, positive_rate, since_positive, session = d2.features[2:]
        # Counts enter as log1p(count): a value check, not a bit check (numpy's SIMD log1p and
        # math.log1p, which the shard uses, differ in the last bit on AVX-512 machines).
        assert (decisions, feedback, session) == _rounded((math.log1p(1), math.log1p(2), math.log1p(3)))
        assert positive_rate == pytest.approx(2 / 4) and 0.0 < since_positive < 0.2

        # Crash the user's shard: the rebuilt one reads the activity back from the logs.
        shard = service.router.shard_of(pseudonym)
        incarnation = await _incarnation(service, shard)
        ray.kill(service.actors[shard], no_restart=False)
        await _restarted(service, shard, incarnation)
        third = await client.recommend(user, SURFACE, context={"x": 0.0})
        d3 = (await _decisions(redis_client, pseudonym, 3))[2]
        assert d3.decision_id == third.decision_id
        seen.append(ActivityEvent(d2.decided_at_ms, "decision"))
        np.testing.assert_allclose(d3.features[2:], _expected(service_config, seen, d3.decided_at_ms), rtol=1e-12)
        assert d3.features[2] == _rounded(math.log1p(2))  # both earlier decisions, one of them from before the crash


def _rounded(expected: Any) -> Any:
    """``expected`` up to float rounding: log1p may be computed by another implementation."""
    return pytest.approx(expected, rel=1e-9, abs=1e-12)


def _feedback_times(redis_client: redis.Redis, pseudonym: str) -> list[int]:
    raw: Any = redis_client.xrange(UserKeys(pseudonym).feedback_log)
    return [int(fields[b"t"]) for _, fields in raw]
