"""Planning at creation through the real service: the surfaces' measured traffic and the spec's
baseline give the plan on the experiment; a spec that refuses an infeasible plan is refused."""

from __future__ import annotations

import asyncio
import datetime
import uuid

import grpc
import pytest
import redis.asyncio as aioredis

from rewardloop.learning.experiments.results import plan_at_creation
from rewardloop.learning.experiments.spec import spec_from_dict
from rewardloop.state.traffic import daily_users
from rewardloop.v1 import admin_pb2_grpc, recommender_pb2, recommender_pb2_grpc
from rewardloop.v1 import experiments_pb2 as xp

pytestmark = pytest.mark.cluster


def _spec(name: str, **fields: object) -> xp.ExperimentSpec:
    return xp.ExperimentSpec(
        name=name, layer=f"test-{name}", surfaces=["eg"], primary_metric=xp.Metric(source="click"),
        variants=[xp.Variant(name="control", weight=1), xp.Variant(name="treatment", weight=1)], **fields,
    )  # fmt: skip


async def test_the_plan_uses_the_measured_traffic_of_the_surfaces(
    admin: admin_pb2_grpc.AdminStub, channel: grpc.aio.Channel, service: object
) -> None:
    recommender = recommender_pb2_grpc.RecommenderStub(channel)
    users = [f"plan-{uuid.uuid4().hex[:6]}-{i}" for i in range(40)]
    for _ in range(2):  # a user seen twice counts once
        await asyncio.gather(
            *(
                recommender.Recommend(recommender_pb2.RecommendRequest(user_id=u, surface="eg"), timeout=10)
                for u in users
            )
        )
    async with aioredis.Redis.from_url(service.redis_url) as redis:  # type: ignore[attr-defined]
        for _ in range(40):  # the front flushes its notes with each catalogue refresh (1 s)
            measured = await daily_users(redis, ["eg"])
            now = datetime.datetime.now(datetime.UTC)
            if measured >= len(users) * 24 / max(1.0, now.hour + now.minute / 60) * 0.97:
                break
            await asyncio.sleep(0.25)
        else:
            raise AssertionError(f"the surface's traffic was never counted: {measured}")
    name = f"t-plan-{uuid.uuid4().hex[:8]}"
    created = await admin.CreateExperiment(
        xp.CreateExperimentRequest(spec=_spec(name, baseline_mean=0.3, mde=0.5, planned_days=30)), timeout=5
    )
    planning = created.planning
    assert planning.users_per_day >= measured * 0.97
    # The plan is the pure planner's at that traffic.
    expected = plan_at_creation(
        spec_from_dict(name, {"variants": {"control": 1, "treatment": 1}, "primary_metric": {"source": "click"},
                              "baseline_mean": 0.3, "mde": 0.5, "planned_days": 30}),
        planning.users_per_day,
    )  # fmt: skip
    assert planning.days_needed == pytest.approx(expected.days_needed, rel=1e-9)
    assert planning.message == expected.message and "detects the MDE in" in planning.message
    shown = await admin.GetExperiment(xp.ExperimentRequest(name=name), timeout=5)
    assert shown.planning == planning and shown.spec.baseline_mean == pytest.approx(0.3)


async def test_an_infeasible_plan_is_a_warning_or_a_refusal(admin: admin_pb2_grpc.AdminStub) -> None:
    tight = {"baseline_mean": 0.01, "mde": 0.01, "planned_days": 7, "expected_daily_users": 1_000}
    name = f"t-plan-{uuid.uuid4().hex[:8]}"
    warned = await admin.CreateExperiment(xp.CreateExperimentRequest(spec=_spec(name, **tight)), timeout=5)
    assert not warned.planning.feasible and "beyond its planned 7" in warned.planning.message
    refused = f"t-plan-{uuid.uuid4().hex[:8]}"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.CreateExperiment(
            xp.CreateExperimentRequest(spec=_spec(refused, refuse_infeasible=True, **tight)), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details().startswith("spec.planned_days: at 1,000 users a day")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await admin.GetExperiment(xp.ExperimentRequest(name=refused), timeout=5)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await admin.CreateExperiment(
            xp.CreateExperimentRequest(spec=_spec(f"t-plan-{uuid.uuid4().hex[:8]}", baseline_mean=2.0)), timeout=5
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and bad.value.details().startswith("spec.baseline_mean")
