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
from rewardloop.state.keys import pseudonymize, surface_traffic_key
from rewardloop.state.traffic import daily_users
from rewardloop.v1 import admin_pb2_grpc, recommender_pb2, recommender_pb2_grpc
from rewardloop.v1 import experiments_pb2 as xp
from rewardloop.workers.config import ServiceConfig

pytestmark = pytest.mark.cluster


def _spec(name: str, **fields: object) -> xp.ExperimentSpec:
    return xp.ExperimentSpec(
        name=name, layer=f"test-{name}", surfaces=["eg"], primary_metric=xp.Metric(source="click"),
        variants=[xp.Variant(name="control", weight=1), xp.Variant(name="treatment", weight=1)], **fields,
    )  # fmt: skip


async def test_the_plan_uses_the_measured_traffic_of_the_surfaces(
    admin: admin_pb2_grpc.AdminStub, channel: grpc.aio.Channel, service: object, service_config: ServiceConfig
) -> None:
    recommender = recommender_pb2_grpc.RecommenderStub(channel)
    users = [f"plan-{uuid.uuid4().hex[:6]}-{i}" for i in range(40)]
    started = datetime.datetime.now(datetime.UTC)

    def days_keys() -> list[str]:  # every UTC day the test may touch, midnight included
        now = datetime.datetime.now(datetime.UTC)
        days = {started - datetime.timedelta(days=1), started, now}
        return sorted({surface_traffic_key("eg", d.strftime("%Y%m%d")) for d in days})

    async def uncounted(redis: aioredis.Redis) -> int:
        """How many of the test's users the surface's counts lack: adding a counted user to a copy of
        the sketches changes no register (a user not counted changes one but by chance)."""
        copy = f"test:plan:{uuid.uuid4().hex}"
        await redis.pfmerge(copy, *days_keys())
        try:
            key = service_config.pseudonym_key.encode()  # the counts hold pseudonyms
            return sum([bool(await redis.pfadd(copy, pseudonymize(u, key))) for u in users])
        finally:
            await redis.delete(copy)

    async with aioredis.Redis.from_url(service.redis_url) as redis:  # type: ignore[attr-defined]
        assert await uncounted(redis) > len(users) // 2  # the check can tell
        for _ in range(2):  # a user seen twice counts once
            await asyncio.gather(
                *(
                    recommender.Recommend(recommender_pb2.RecommendRequest(user_id=u, surface="eg"), timeout=10)
                    for u in users
                )
            )
        for _ in range(40):  # the front flushes its notes with each catalogue refresh (1 s)
            missing = await uncounted(redis)
            if not missing:
                break
            await asyncio.sleep(0.25)
        else:
            raise AssertionError(f"the surface's traffic was never counted: {missing} of {len(users)} users missing")
        # What the plan must use: daily_users, read before and after the creation (the test may
        # straddle midnight, when the day the count comes from changes).
        measured = [await daily_users(redis, ["eg"])]
        name = f"t-plan-{uuid.uuid4().hex[:8]}"
        created = await admin.CreateExperiment(
            xp.CreateExperimentRequest(spec=_spec(name, baseline_mean=0.3, mde=0.5, planned_days=30)), timeout=5
        )
        measured.append(await daily_users(redis, ["eg"]))
    assert min(measured) > 0
    planning = created.planning
    assert min(measured) * 0.97 <= planning.users_per_day <= max(measured) * 1.03
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
