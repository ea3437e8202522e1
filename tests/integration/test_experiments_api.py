"""Experiments over the real gRPC API: lifecycle, versions, history, sticky ramps seen by Assign, errors."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import Any

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp

from rewardloop.learning.experiments.moments import Moments
from rewardloop.learning.experiments.stats import compare_proportions
from rewardloop.state.experiment_metrics import read_stats
from rewardloop.state.experiments import ExperimentCatalog
from rewardloop.state.keys import UserKeys, pseudonymize
from rewardloop.v1 import (
    admin_pb2_grpc,
    assigner_pb2,
    assigner_pb2_grpc,
    common_pb2,
    feedback_pb2,
    feedback_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
)
from rewardloop.v1 import experiments_pb2 as xp

pytestmark = pytest.mark.cluster

USERS = [f"xp-user-{i}" for i in range(1000)]
CLICK, SKIP = feedback_pb2.SIGNAL_CLICK, feedback_pb2.SIGNAL_SKIP


def _spec(name: str, **fields: Any) -> xp.ExperimentSpec:
    base: dict[str, Any] = {
        "name": name,
        "variants": [xp.Variant(name="control", weight=1), xp.Variant(name="treatment", weight=1)],
        "primary_metric": xp.Metric(source="click"),
        "layer": f"test-{name}",
    }
    return xp.ExperimentSpec(**{**base, **fields})


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def _assigned(channel: grpc.aio.Channel, name: str, users: list[str]) -> dict[str, str]:
    stub = assigner_pb2_grpc.AssignerStub(channel)
    replies = await asyncio.gather(
        *(stub.Assign(assigner_pb2.AssignRequest(user_id=u, experiments=[name]), timeout=10) for u in users)
    )
    return {u: a.variant for u, reply in zip(users, replies, strict=True) for a in reply.assignments}


async def _until_assigned(channel: grpc.aio.Channel, name: str, users: list[str], enrolled: float) -> dict[str, str]:
    """Assign polled until the front's catalogue has the change (it refreshes every second) and two
    polls in a row agree: a refresh landing amid one poll's calls answers them from two versions."""
    previous: dict[str, str] | None = None
    for _ in range(60):
        got = await _assigned(channel, name, users)
        n = len(users)
        if abs(len(got) - enrolled * n) <= 5 * math.sqrt(n * enrolled * (1 - enrolled)) + 1 and got == previous:
            return got
        previous = got
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name}: {len(got)} of {len(users)} enrolled, expected about {enrolled:.0%}")


async def test_lifecycle_versions_and_history(admin: admin_pb2_grpc.AdminStub) -> None:
    name = _name()
    created = await admin.CreateExperiment(xp.CreateExperimentRequest(spec=_spec(name, coverage=0.5)), timeout=5)
    assert (created.status, created.version, created.coverage, created.source) == (
        xp.EXPERIMENT_STATUS_DRAFT,
        1,
        0,
        "api",
    )
    assert created.spec.alpha == pytest.approx(0.05) and created.spec.planned_days == pytest.approx(14)
    started = await admin.StartExperiment(xp.ExperimentRequest(name=name, expected_version=1), timeout=5)
    assert (started.status, started.version, started.coverage) == (xp.EXPERIMENT_STATUS_RUNNING, 2, 0.5)
    assert [a.coverage for a in started.allocation] == pytest.approx([0.25, 0.25])
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await admin.PauseExperiment(xp.ExperimentRequest(name=name, expected_version=1), timeout=5)
    assert stale.value.code() == grpc.StatusCode.ABORTED
    assert "expected_version" in (stale.value.details() or "")
    paused = await admin.PauseExperiment(xp.ExperimentRequest(name=name, reason="checking logs"), timeout=5)
    assert (paused.status, paused.reason) == (xp.EXPERIMENT_STATUS_PAUSED, "checking logs")
    stopped = await admin.StopExperiment(
        xp.StopExperimentRequest(name=name, winner="treatment", reason="won"), timeout=5
    )
    assert (stopped.status, stopped.winner, stopped.coverage) == (xp.EXPERIMENT_STATUS_STOPPED, "treatment", 0)
    history = await admin.GetExperimentHistory(xp.ExperimentHistoryRequest(name=name), timeout=5)
    assert [(c.action, c.version) for c in history.changes] == [("stop", 4), ("pause", 3), ("start", 2), ("create", 1)]
    got = await admin.GetExperiment(xp.ExperimentRequest(name=name), timeout=5)
    assert got == stopped


async def test_ramp_is_sticky_through_assign(admin: admin_pb2_grpc.AdminStub, channel: grpc.aio.Channel) -> None:
    """Users assigned at 10% keep their variant at 50% and 100%, and after the allocation changes."""
    name = _name()
    ramp = [xp.RampStep(coverage=0.1), xp.RampStep(coverage=0.5), xp.RampStep(coverage=1.0)]
    await admin.CreateExperiment(xp.CreateExperimentRequest(spec=_spec(name, ramp=ramp)), timeout=5)
    await admin.StartExperiment(xp.ExperimentRequest(name=name), timeout=5)
    seen = await _until_assigned(channel, name, USERS, 0.1)
    assert set(seen.values()) == {"control", "treatment"}
    for coverage in (0.5, 1.0):
        ramped = await admin.RampExperiment(xp.RampExperimentRequest(name=name), timeout=5)
        assert ramped.coverage == coverage
        now = await _until_assigned(channel, name, USERS, coverage)
        assert all(now[u] == v for u, v in seen.items()), "a ramp moved a user"
        seen = now
    current = await admin.GetExperiment(xp.ExperimentRequest(name=name), timeout=5)
    reweighted = _spec(
        name, ramp=ramp, variants=[xp.Variant(name="control", weight=1), xp.Variant(name="treatment", weight=3)]
    )
    updated = await admin.UpdateExperiment(
        xp.UpdateExperimentRequest(spec=reweighted, expected_version=current.version), timeout=5
    )
    # A full layer: treatment cannot grow from new users, so control retires down to a 1:3 split.
    assert [a.coverage for a in updated.allocation] == pytest.approx([1 / 3 * 0.5, 0.5], abs=0.01)
    now = await _until_assigned(channel, name, USERS, 2 / 3)
    assert all(seen[u] == v for u, v in now.items()), "re-weighting moved a user"


async def test_layers_exclude_and_targeting_applies(
    admin: admin_pb2_grpc.AdminStub, channel: grpc.aio.Channel, service: Any
) -> None:
    first, second = _name(), _name()
    layer = f"shared-{first}"
    await admin.CreateExperiment(xp.CreateExperimentRequest(spec=_spec(first, layer=layer, coverage=0.6)), timeout=5)
    targeting = [xp.TargetingCondition(attribute="country", operator="in", values=["de", "at"])]
    await admin.CreateExperiment(
        xp.CreateExperimentRequest(spec=_spec(second, layer=layer, coverage=0.6, targeting=targeting)), timeout=5
    )
    await admin.StartExperiment(xp.ExperimentRequest(name=first), timeout=5)
    started = await admin.StartExperiment(xp.ExperimentRequest(name=second), timeout=5)
    # The layer had 40% left: the second experiment got that, not the 60% it asked for.
    assert sum(a.coverage for a in started.allocation) == pytest.approx(0.4, abs=0.001)
    for _ in range(100):  # the front's catalogue has both (it refreshes every second)
        if {first, second} <= service.catalog.assigner.names:
            break
        await asyncio.sleep(0.05)
    stub = assigner_pb2_grpc.AssignerStub(channel)
    both = 0
    for user in USERS[:500]:
        german = common_pb2.Context(categorical={"country": "de"})
        reply = await stub.Assign(assigner_pb2.AssignRequest(user_id=user, context=german), timeout=5)
        mine = {a.experiment for a in reply.assignments} & {first, second}
        assert len(mine) <= 1, "two experiments of one layer enrolled one user"
        both += len(mine)
        french = common_pb2.Context(categorical={"country": "fr"})
        reply = await stub.Assign(
            assigner_pb2.AssignRequest(user_id=user, experiments=[second], context=french), timeout=5
        )
        assert not reply.assignments, "targeting let a user of another country in"
    assert both == pytest.approx(500, abs=50)


def _create(**fields: Any) -> xp.CreateExperimentRequest:
    return xp.CreateExperimentRequest(spec=_spec(fields.pop("name", "t-bad"), **fields))


TWO = [xp.Variant(name="a", weight=1), xp.Variant(name="b", weight=1)]
BAD_METRIC = xp.Metric(source="frown")
BAD_GUARDRAIL = xp.Metric(source="skip", tolerance=-1)
NO_METRIC = xp.CreateExperimentRequest(spec=xp.ExperimentSpec(name="t-bad", variants=TWO))
ERRORS = [
    ("CreateExperiment", _create(coverage=2), "INVALID_ARGUMENT", "spec.coverage"),
    ("CreateExperiment", _create(surfaces=["nope"]), "INVALID_ARGUMENT", "spec.surfaces[0]"),
    ("CreateExperiment", _create(primary_metric=BAD_METRIC), "INVALID_ARGUMENT", "spec.primary_metric.source"),
    ("CreateExperiment", _create(guardrails=[BAD_GUARDRAIL]), "INVALID_ARGUMENT", "spec.guardrails[0].tolerance"),
    ("CreateExperiment", _create(name="bad name!"), "INVALID_ARGUMENT", "spec.name"),
    ("CreateExperiment", NO_METRIC, "INVALID_ARGUMENT", "spec.primary_metric"),
    ("CreateExperiment", _create(name="color"), "ALREADY_EXISTS", "config file"),
    ("StartExperiment", xp.ExperimentRequest(name="t-missing"), "NOT_FOUND", "name"),
    ("StartExperiment", xp.ExperimentRequest(name=""), "INVALID_ARGUMENT", "name"),
    ("RampExperiment", xp.RampExperimentRequest(name="t-missing", coverage=3), "INVALID_ARGUMENT", "coverage"),
    ("GetExperimentHistory", xp.ExperimentHistoryRequest(name="t-missing", limit=5000), "INVALID_ARGUMENT", "limit"),
    ("GetExperiment", xp.ExperimentRequest(name="t-missing"), "NOT_FOUND", "name"),
    ("GetExperimentResults", xp.ExperimentRequest(name="t-missing"), "NOT_FOUND", "name"),
    ("GetExperimentResults", xp.ExperimentRequest(name="color"), "FAILED_PRECONDITION", "name"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "request_", "code", "field"), ERRORS)
async def test_bad_requests_get_the_right_status(
    admin: admin_pb2_grpc.AdminStub, method: str, request_: Any, code: str, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await getattr(admin, method)(request_, timeout=5)
    assert error.value.code() == getattr(grpc.StatusCode, code)
    assert (error.value.details() or "").startswith(field) or field in (error.value.details() or "")


async def test_state_changes_refused_keep_what_was_accepted(admin: admin_pb2_grpc.AdminStub) -> None:
    name = _name()
    await admin.CreateExperiment(xp.CreateExperimentRequest(spec=_spec(name)), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await admin.CreateExperiment(xp.CreateExperimentRequest(spec=_spec(name)), timeout=5)
    assert twice.value.code() == grpc.StatusCode.ALREADY_EXISTS
    running = await admin.StartExperiment(xp.ExperimentRequest(name=name), timeout=5)
    refusals = [
        admin.StartExperiment(xp.ExperimentRequest(name=name), timeout=5),
        admin.DeleteExperiment(xp.ExperimentRequest(name=name), timeout=5),
        admin.UpdateExperiment(xp.UpdateExperimentRequest(spec=_spec(name, layer="elsewhere")), timeout=5),
        admin.UpdateExperiment(
            xp.UpdateExperimentRequest(
                spec=_spec(name, variants=[xp.Variant(name="control", weight=1), xp.Variant(name="other", weight=1)])
            ),
            timeout=5,
        ),
    ]
    for refusal in refusals:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await refusal
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION, error.value.details()
    assert await admin.GetExperiment(xp.ExperimentRequest(name=name), timeout=5) == running


async def test_the_catalogue_is_durable(admin: admin_pb2_grpc.AdminStub, service: Any) -> None:
    """What the API changed is in Redis: a new process's catalogue assigns exactly as the front does."""
    name = _name()
    await admin.CreateExperiment(xp.CreateExperimentRequest(spec=_spec(name, coverage=0.3)), timeout=5)
    await admin.StartExperiment(xp.ExperimentRequest(name=name), timeout=5)
    catalog = ExperimentCatalog(service.redis_url)
    async with aioredis.Redis.from_url(service.redis_url) as redis:
        assert await catalog.refresh(redis)
        assert not await catalog.refresh(redis)
    assert catalog.experiments[name].status == "running"
    for _ in range(50):
        await asyncio.sleep(0.1)
        if name in service.catalog.assigner.names:
            break
    assert [catalog.assigner.assign(u, only={name}) for u in USERS[:300]] == [
        service.catalog.assigner.assign(u, only={name}) for u in USERS[:300]
    ]


def _event(event_id: str, user: str, item: str, signal: int, **fields: Any) -> feedback_pb2.FeedbackEvent:
    return feedback_pb2.FeedbackEvent(
        event_id=event_id, user_id=user, item_id=item, signal=signal, value=1, surface="ucb", **fields
    )


async def test_exposures_and_metrics_stream_into_variant_sums(
    admin: admin_pb2_grpc.AdminStub, channel: grpc.aio.Channel, service: Any
) -> None:
    """Recommend and Assign expose (once per user), feedback after the exposure moves the variant's
    sums (once per event, once per converting user), and the user's own values add up to them."""
    name = _name()
    spec = _spec(
        name, surfaces=["ucb"], primary_metric=xp.Metric(source="click"),
        guardrails=[xp.Metric(source="skip", aggregate="count", lower_is_better=True)],
    )  # fmt: skip
    await admin.CreateExperiment(xp.CreateExperimentRequest(spec=spec), timeout=5)
    await admin.StartExperiment(xp.ExperimentRequest(name=name), timeout=5)
    users = [f"{name}-u{i}" for i in range(40)]
    await _until_assigned(channel, name, users, 1.0)  # also the first exposure of each
    recommender = recommender_pb2_grpc.RecommenderStub(channel)
    feedback = feedback_pb2_grpc.FeedbackStub(channel)
    variant_of, clicked, skips = {}, {"control": 0, "treatment": 0}, {"control": 0, "treatment": 0}
    for i, user in enumerate(users):
        rec = await recommender.Recommend(recommender_pb2.RecommendRequest(user_id=user, surface="ucb"), timeout=5)
        (variant_of[user],) = [a.variant for a in rec.assignments if a.experiment == name]
        item = rec.items[0].item_id
        events = []
        if variant_of[user] == "treatment" or i % 3 == 0:
            clicked[variant_of[user]] += 1
            # Two clicks, one a retry: the user converts once; the retry is not an event.
            for event_id in (f"{user}-c1", f"{user}-c1", f"{user}-c2"):
                events.append(feedback_pb2.FeedbackEvent(
                    event_id=event_id, user_id=user, decision_id=rec.decision_id, item_id=item, signal=CLICK, value=1
                ))  # fmt: skip
        if i % 4 == 0:
            skips[variant_of[user]] += 1
            events.append(_event(f"{user}-s", user, item, SKIP))
        # Before the exposure: not the variant's doing.
        old = Timestamp()
        old.FromMilliseconds(int(time.time() * 1000) - 3_600_000)
        events.append(_event(f"{user}-old", user, item, SKIP, occurred_at=old))
        for event in events:
            await feedback.Record(event, timeout=5)
    async with aioredis.Redis.from_url(service.redis_url) as redis:
        sums = await read_stats(redis, name)
    counts = {v: sum(1 for u in users if variant_of[u] == v) for v in ("control", "treatment")}
    assert {v: sums[v].n for v in counts} == counts
    for variant in counts:
        assert sums[variant].metrics["click_conversion"] == pytest.approx((clicked[variant], clicked[variant]))
        assert sums[variant].metrics.get("skip_count", (0.0, 0.0)) == pytest.approx((skips[variant], skips[variant]))
    # The results read those sums: the same counts, the engine's test on them.
    results = await admin.GetExperimentResults(xp.ExperimentRequest(name=name), timeout=5)
    assert {v.variant: v.users for v in results.variants} == counts
    (primary,) = [c for c in results.comparisons if c.role == "primary"]
    expected = compare_proportions(
        Moments(counts["control"], clicked["control"], clicked["control"]),
        Moments(counts["treatment"], clicked["treatment"], clicked["treatment"]),
    )
    assert (primary.test, primary.p_value) == ("two_proportion_z", pytest.approx(expected.p_value))
    assert primary.verdict in ("better", "inconclusive") and results.planning.users_per_day > 0
    # Deleted: its sums go with it, and a user's next event drops the user's fields of it (while
    # some experiment runs: with none, the shard reads no user's hash and the fields expire).
    other = _name()
    await admin.CreateExperiment(xp.CreateExperimentRequest(spec=_spec(other)), timeout=5)
    await admin.StartExperiment(xp.ExperimentRequest(name=other), timeout=5)
    await admin.StopExperiment(xp.StopExperimentRequest(name=name), timeout=5)
    await admin.DeleteExperiment(xp.ExperimentRequest(name=name), timeout=5)
    user = users[0]
    key = UserKeys(pseudonymize(user, service.config.pseudonym_key.encode())).experiments
    async with aioredis.Redis.from_url(service.redis_url) as redis:
        assert any(name.encode() in f for f in await redis.hkeys(key))
        assert await read_stats(redis, name) == {}
        for attempt in range(50):
            await feedback.Record(_event(f"{user}-after-{attempt}", user, "item-000", SKIP), timeout=5)
            if not any(name.encode() in f for f in await redis.hkeys(key)):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the deleted experiment's fields stayed in the user's hash")


async def test_a_holdout_keeps_its_users_out_of_other_experiments(
    admin: admin_pb2_grpc.AdminStub, channel: grpc.aio.Channel
) -> None:
    hold, other = _name(), _name()
    holdout = _spec(hold, layer="", holdout=True,
                    variants=[xp.Variant(name="held", weight=1), xp.Variant(name="exposed", weight=1)])  # fmt: skip
    await admin.CreateExperiment(xp.CreateExperimentRequest(spec=holdout), timeout=5)
    await admin.CreateExperiment(xp.CreateExperimentRequest(spec=_spec(other)), timeout=5)
    for name in (hold, other):
        await admin.StartExperiment(xp.ExperimentRequest(name=name), timeout=5)
    users = USERS[:300]
    in_hold = await _until_assigned(channel, hold, users, 1.0)
    stub = assigner_pb2_grpc.AssignerStub(channel)
    for user in users:
        reply = await stub.Assign(assigner_pb2.AssignRequest(user_id=user, experiments=[hold, other]), timeout=5)
        got = {a.experiment: a.variant for a in reply.assignments}
        if in_hold[user] == "held":
            assert got == {hold: "held"}
        else:
            assert got[hold] == "exposed" and other in got
    assert 0.35 < sum(v == "held" for v in in_hold.values()) / len(users) < 0.65
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await admin.CreateExperiment(
            xp.CreateExperimentRequest(spec=_spec(_name(), layer="shared", holdout=True)), timeout=5
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and bad.value.details().startswith("spec.holdout")


async def test_repeat_exposures_skip_redis_and_the_cache_is_bounded(
    admin: admin_pb2_grpc.AdminStub, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rewardloop.state.experiments as experiments_module

    name = _name()
    await admin.CreateExperiment(xp.CreateExperimentRequest(spec=_spec(name)), timeout=5)
    await admin.StartExperiment(xp.ExperimentRequest(name=name), timeout=5)
    catalog = await ExperimentCatalog(service.redis_url).start()
    calls = 0
    try:
        assert name in catalog.experiments
        original = experiments_module.Exposures.expose

        async def counted(self: Any, *args: Any) -> int:
            nonlocal calls
            calls += 1
            return await original(self, *args)

        monkeypatch.setattr(experiments_module.Exposures, "expose", counted)
        monkeypatch.setattr(experiments_module, "EXPOSED_CACHE", 5)
        users = [f"{name}-cache-{i}" for i in range(8)]
        at = int(time.time() * 1000)
        firsts = [await catalog.expose(u, catalog.assigner.assign(u, only={name}), at) for u in users]
        assert firsts == [1] * 8 and calls == 8 and len(catalog.exposed) == 5
        # The last five are remembered: no Redis call; the first three were evicted: one call each,
        # and Redis still knows them (not first exposures).
        repeats = [await catalog.expose(u, catalog.assigner.assign(u, only={name}), at + 1) for u in users[3:]]
        assert repeats == [0] * 5 and calls == 8
        evicted = [await catalog.expose(u, catalog.assigner.assign(u, only={name}), at + 2) for u in users[:3]]
        assert evicted == [0] * 3 and calls == 11 and len(catalog.exposed) == 5
    finally:
        await catalog.stop()


async def test_a_burst_of_requests_past_the_redis_pool_waits_for_connections_instead_of_failing(
    admin: admin_pb2_grpc.AdminStub, service: Any
) -> None:
    """300 requests at once, each needing Redis (an experiment created after the front's last refresh,
    first exposures): more than a connection pool's worth at once. Each waits for a connection;
    none fails (redis-py 8's default pool raised "Too many connections" past 100, an Assign burst got
    UNAVAILABLE and exposures were lost)."""
    catalog = await ExperimentCatalog(service.redis_url, refresh_seconds=3600).start()
    try:
        name = _name()
        await admin.CreateExperiment(xp.CreateExperimentRequest(spec=_spec(name)), timeout=5)
        assert name not in catalog.experiments  # not refreshed: each lookup goes to Redis
        assert await asyncio.gather(*(catalog.exists(name) for _ in range(300))) == [True] * 300
        at = int(time.time() * 1000)
        firsts = await asyncio.gather(*(catalog.expose(f"{name}-{i}", [(name, "control")], at) for i in range(300)))
        assert firsts == [1] * 300
    finally:
        await catalog.stop()


async def test_cuped_covariates_come_from_the_users_pre_exposure_history(
    admin: admin_pb2_grpc.AdminStub, channel: grpc.aio.Channel, service: Any
) -> None:
    """Each user's clicks of the 14 days before exposure become their covariate x (computed in the
    background after the first exposure); Σx, Σx², Σxy per variant match what the users did, and the
    primary is compared CUPED-adjusted, with the variance reduction the correlation gives."""
    name = _name()
    spec = _spec(name, primary_metric=xp.Metric(source="click", aggregate="count"))
    await admin.CreateExperiment(xp.CreateExperimentRequest(spec=spec), timeout=5)
    rng = np.random.default_rng(7)
    users = [f"{name}-c{i}" for i in range(240)]
    before = {u: int(rng.integers(0, 6)) for u in users}
    after = {u: int(max(0, before[u] + rng.integers(-1, 2))) for u in users}
    feedback = feedback_pb2_grpc.FeedbackStub(channel)
    two_days_ago = Timestamp()
    two_days_ago.FromMilliseconds(int(time.time() * 1000) - 2 * 86_400_000)
    await asyncio.gather(*(
        feedback.Record(_event(f"{u}-pre{k}", u, "item-000", CLICK, occurred_at=two_days_ago), timeout=10)
        for u in users for k in range(before[u])
    ))  # fmt: skip
    await admin.StartExperiment(xp.ExperimentRequest(name=name), timeout=5)
    variant_of = await _until_assigned(channel, name, users, 1.0)  # the first exposures
    await asyncio.gather(*(
        feedback.Record(_event(f"{u}-post{k}", u, "item-000", CLICK), timeout=10)
        for u in users for k in range(after[u])
    ))  # fmt: skip
    expected = {
        v: (
            sum(before[u] for u in users if variant_of[u] == v),
            sum(before[u] ** 2 for u in users if variant_of[u] == v),
            sum(before[u] * after[u] for u in users if variant_of[u] == v),
        )
        for v in ("control", "treatment")
    }
    async with aioredis.Redis.from_url(service.redis_url) as redis:
        for _ in range(100):
            sums = await read_stats(redis, name)
            got = {v: sums[v].covariates.get("click_count") for v in expected if v in sums}
            if got == {v: pytest.approx(e) for v, e in expected.items()}:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"covariate sums {got} never reached {expected}")
    results = await admin.GetExperimentResults(xp.ExperimentRequest(name=name), timeout=5)
    (primary,) = [c for c in results.comparisons if c.role == "primary"]
    assert primary.cuped and primary.test == "welch_t"
    x = np.array([before[u] for u in users], dtype=float)
    y = np.array([after[u] for u in users], dtype=float)
    assert primary.variance_reduction == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, abs=0.05)
    assert primary.variance_reduction > 0.5


async def test_a_re_created_experiment_exposes_and_measures_its_users_afresh(
    admin: admin_pb2_grpc.AdminStub, channel: grpc.aio.Channel, service: Any
) -> None:
    """Deleted and created again under the same name: the users' fields of the old one (exposure,
    metric values) do not carry over, they are exposed and counted again."""
    name = _name()
    spec = _spec(name, primary_metric=xp.Metric(source="click", aggregate="count"))
    users = [f"{name}-r{i}" for i in range(20)]
    feedback = feedback_pb2_grpc.FeedbackStub(channel)
    for round_ in range(2):
        await admin.CreateExperiment(xp.CreateExperimentRequest(spec=spec), timeout=5)
        await admin.StartExperiment(xp.ExperimentRequest(name=name), timeout=5)
        variant_of = await _until_assigned(channel, name, users, 1.0)
        for user in users:
            await feedback.Record(_event(f"{user}-{round_}", user, "item-000", CLICK), timeout=5)
        async with aioredis.Redis.from_url(service.redis_url) as redis:
            for _ in range(50):
                sums = await read_stats(redis, name)
                clicks = sum(s.metrics.get("click_count", (0.0, 0.0))[0] for s in sums.values())
                if clicks >= len(users):
                    break
                await asyncio.sleep(0.1)
        counts = {v: list(variant_of.values()).count(v) for v in set(variant_of.values())}
        assert {v: sums[v].n for v in counts} == counts, f"round {round_}: users counted {sums}"
        assert clicks == len(users), f"round {round_}: {clicks} clicks attributed"
        await admin.StopExperiment(xp.StopExperimentRequest(name=name), timeout=5)
        await admin.DeleteExperiment(xp.ExperimentRequest(name=name), timeout=5)
        # The front forgets it within a refresh; until then it would answer from the old record.
        for _ in range(50):
            if name not in service.catalog.experiments:
                break
            await asyncio.sleep(0.1)
