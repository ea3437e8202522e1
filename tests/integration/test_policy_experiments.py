"""Policy experiments (issue 13, item 3) through the real service: two algorithms on one surface, each
deciding for its variant's users and trained by their feedback, the engine naming the better one;
the variant's state durable (snapshot + log replay after a shard restart) and dropped once its
experiment stops, the users back on the surface's own policy and state; bad input refused."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis

from rewardloop.learning.experiments import lifecycle
from rewardloop.learning.experiments.buckets import BUCKETS
from rewardloop.learning.experiments.policies import is_variant_key, policy_key
from rewardloop.learning.experiments.spec import spec_from_dict
from rewardloop.learning.rewards import Signal
from rewardloop.state.experiments import ExperimentStore
from rewardloop.state.keys import pseudonymize
from rewardloop.v1 import admin_pb2_grpc, feedback_pb2, feedback_pb2_grpc, recommender_pb2, recommender_pb2_grpc
from rewardloop.v1 import experiments_pb2 as xp
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.messages import Decision, FeedbackCall, RecommendCall, Recorded
from rewardloop.workers.redis_server import EmbeddedRedis
from rewardloop.workers.shard import ShardCore
from tests.conftest import ITEMS, LEARN_ITEMS

pytestmark = pytest.mark.cluster

SURFACE = "learn_ucb"  # ucb1 by configuration: neither variant's algorithm
# The simulated population: every user clicks item k with CLICK_RATES[k] (one good item, one fair).
CLICK_RATES = np.array([0.05] * LEARN_ITEMS)
CLICK_RATES[[3, 7]] = [0.9, 0.5]
USERS, ROUNDS, IN_FLIGHT = 120, 20, 24
CONTROL = xp.SurfacePolicy(algorithm="epsilon_greedy", params={"epsilon": 1.0})  # uniformly random
TREATMENT = xp.SurfacePolicy(algorithm="thompson")


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def _spec(name: str, control: xp.SurfacePolicy = CONTROL, treatment: xp.SurfacePolicy = TREATMENT,
          **fields: Any) -> xp.ExperimentSpec:  # fmt: skip
    base: dict[str, Any] = {
        "name": name,
        "variants": [
            xp.Variant(name="control", weight=1, policies={SURFACE: control}),
            xp.Variant(name="treatment", weight=1, policies={SURFACE: treatment}),
        ],
        "surfaces": [SURFACE],
        "primary_metric": xp.Metric(source="reward", aggregate="sum", surface=SURFACE),
        "layer": f"test-{name}",
        "no_auto_stop": True,
        "no_cuped": True,
    }
    return xp.ExperimentSpec(**{**base, **fields})


async def _interact(
    recommender: recommender_pb2_grpc.RecommenderStub, feedback: feedback_pb2_grpc.FeedbackStub, user: str,
    rng: np.random.Generator, step: int,
) -> tuple[recommender_pb2.RecommendResponse, bool]:  # fmt: skip
    """One Recommend of one item, the user's click (or not) on it as feedback."""
    rec = await recommender.Recommend(recommender_pb2.RecommendRequest(user_id=user, surface=SURFACE), timeout=10)
    item = rec.items[0].item_id
    clicked = bool(rng.random() < CLICK_RATES[ITEMS.index(item)])
    event = feedback_pb2.FeedbackEvent(
        event_id=f"{user}-{step}", user_id=user, decision_id=rec.decision_id, item_id=item,
        signal=feedback_pb2.SIGNAL_CLICK, value=float(clicked),
    )  # fmt: skip
    await feedback.Record(event, timeout=10)
    return rec, clicked


async def test_two_algorithms_on_one_surface_the_engine_names_the_better(
    admin: admin_pb2_grpc.AdminStub, channel: grpc.aio.Channel, service: Any
) -> None:
    name = _name()
    created = await admin.CreateExperiment(xp.CreateExperimentRequest(spec=_spec(name)), timeout=5)
    assert created.spec.variants[0].policies[SURFACE] == CONTROL
    assert created.spec.variants[1].policies[SURFACE] == TREATMENT
    await admin.StartExperiment(xp.ExperimentRequest(name=name), timeout=5)
    await asyncio.sleep(1.5)  # the front's catalogue refreshes every second
    recommender = recommender_pb2_grpc.RecommenderStub(channel)
    feedback = feedback_pb2_grpc.FeedbackStub(channel)
    users = [f"{name}-u{i}" for i in range(USERS)]
    variant_of: dict[str, str] = {}
    algorithms: dict[str, set[str]] = {"control": set(), "treatment": set()}
    clicks = {"control": 0, "treatment": 0}
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def drive(index: int, user: str) -> None:
        rng = np.random.default_rng([2026, index])  # seeded per user: the same population every run
        async with slots:
            for step in range(ROUNDS):
                rec, clicked = await _interact(recommender, feedback, user, rng, step)
                (variant,) = [a.variant for a in rec.assignments if a.experiment == name]
                assert variant_of.setdefault(user, variant) == variant
                algorithms[variant].add(rec.policy)
                clicks[variant] += clicked

    await asyncio.gather(*(drive(i, u) for i, u in enumerate(users)))
    # Each variant's users were decided by its algorithm, every time.
    assert algorithms == {"control": {"epsilon_greedy"}, "treatment": {"thompson"}}
    per_user = {v: clicks[v] / sum(1 for u in users if variant_of[u] == v) for v in clicks}
    # Random: 20 * 0.18 = 3.6 clicks a user; Thompson sampling learns each user's good item within the 20.
    assert per_user["treatment"] > 1.5 * per_user["control"], per_user
    results = await admin.GetExperimentResults(xp.ExperimentRequest(name=name), timeout=10)
    assert {v.variant: v.users for v in results.variants} == {
        v: sum(1 for u in users if variant_of[u] == v) for v in ("control", "treatment")
    }
    (primary,) = [c for c in results.comparisons if c.role == "primary"]
    assert (primary.metric, primary.variant, primary.verdict) == ("reward_sum", "treatment", "better"), primary
    assert primary.variant_mean == pytest.approx(per_user["treatment"])
    assert primary.control_mean == pytest.approx(per_user["control"])

    # The variant's state took every reward; the surface's own state none. Once the experiment stops,
    # the user is back on the surface's policy and state, and the variant's state is gone.
    user = users[0]
    pseudonym = pseudonymize(user, service.config.pseudonym_key.encode())
    state = await service.router.user_state(pseudonym)
    (key,) = [k for k in state if is_variant_key(k)]
    assert key.startswith(f"{SURFACE}@{name}/{variant_of[user]}/")
    assert state[key]["n_updates"] == ROUNDS and state[SURFACE]["n_updates"] == 0
    await admin.StopExperiment(xp.StopExperimentRequest(name=name, winner="treatment"), timeout=5)
    await asyncio.sleep(1.5)
    rng = np.random.default_rng(0)
    rec, _ = await _interact(recommender, feedback, user, rng, ROUNDS)
    assert rec.policy == "ucb1" and not [a for a in rec.assignments if a.experiment == name]
    state = await service.router.user_state(pseudonym)
    assert not [k for k in state if is_variant_key(k)] and state[SURFACE]["n_updates"] == 1


async def test_bad_policies_get_the_documented_status(admin: admin_pb2_grpc.AdminStub) -> None:
    name = _name()
    bad = [
        (_spec(name, treatment=xp.SurfacePolicy(algorithm="nope")),
         f"spec.variants[1].policies.{SURFACE}.algorithm", "unknown algorithm"),
        (_spec(name, control=xp.SurfacePolicy(algorithm="epsilon_greedy", params={"epsilon": 2.0})),
         f"spec.variants[0].policies.{SURFACE}.params.epsilon", "must be in [0, 1]"),
        (_spec(name, treatment=xp.SurfacePolicy(algorithm="ucb1", params={"alpha": 1.0})),
         f"spec.variants[1].policies.{SURFACE}.params.alpha", "unknown parameter"),
        (_spec(name, surfaces=["ucb"]), f"spec.variants[0].policies.{SURFACE}", "must be listed in surfaces"),
    ]  # fmt: skip
    for spec, field, message in bad:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin.CreateExperiment(xp.CreateExperimentRequest(spec=spec), timeout=5)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (refused.value.details() or "").startswith(f"{field}: ") and message in (refused.value.details() or "")
    await admin.CreateExperiment(xp.CreateExperimentRequest(spec=_spec(name)), timeout=5)
    # A draft's policies may change; a started experiment's may not (two algorithms' evidence in one arm).
    ucb = xp.SurfacePolicy(algorithm="ucb1", params={"c": 2.0})
    updated = await admin.UpdateExperiment(xp.UpdateExperimentRequest(spec=_spec(name, treatment=ucb)), timeout=5)
    assert updated.spec.variants[1].policies[SURFACE] == xp.SurfacePolicy(algorithm="ucb1", params={"c": 2.0})
    await admin.StartExperiment(xp.ExperimentRequest(name=name), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as frozen:
        await admin.UpdateExperiment(xp.UpdateExperimentRequest(spec=_spec(name)), timeout=5)
    assert frozen.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "policies of ['treatment'] cannot change" in (frozen.value.details() or "")


DB = 9
SHARD_CONFIG = {
    "service": {"shards": 1, "seed": 3, "snapshot_every": 1000},
    "surfaces": {"s": {"algorithm": "ucb1", "items": ITEMS[:4]}},
}


async def _change(url: str, name: str, change: Any) -> lifecycle.Experiment:
    async with aioredis.Redis.from_url(url) as redis:
        changed = await ExperimentStore(redis).apply(name, "test", lambda experiments: change(experiments.get(name)))
    assert changed is not None
    return changed


async def _decide_and_learn(shard: ShardCore, user: str, steps: range, assignments: Any) -> list[Decision]:
    decided = []
    for step in steps:
        [decision] = await shard.recommend([RecommendCall(user, "s", 1, assignments=assignments)])
        assert isinstance(decision, Decision)
        item, clicked = decision.items[0].item_id, float(step % 3 == 0)
        call = FeedbackCall(user, f"{user}-{step}", item, Signal.CLICK.value, clicked, int(time.time() * 1000),
                            decision_id=decision.decision_id)  # fmt: skip
        [recorded] = await shard.feedback([call])
        assert isinstance(recorded, Recorded) and not recorded.flag
        decided.append(decision)
    return decided


async def test_a_variants_state_survives_restarts_and_goes_when_its_experiment_stops(
    redis_server: EmbeddedRedis,
) -> None:
    """A shard that dies rebuilds the variant's state from the log (no snapshot of it yet), then from
    its snapshot; feedback to a decision made before the restart joins through Redis and trains it.
    Stopped, the experiment's states are dropped at the user's next touch and from the snapshot."""
    url = redis_server.url.rsplit("/", 1)[0] + f"/{DB}"
    async with aioredis.Redis.from_url(url) as redis:
        await redis.flushdb()
    config = ServiceConfig.from_dict(SHARD_CONFIG)
    name = _name()
    spec = spec_from_dict(name, {
        "variants": {"control": 1, "treatment": 1}, "surfaces": ["s"], "primary_metric": {"source": "click"},
        "policies": {"treatment": {"s": {"algorithm": "thompson"}}},
    })  # fmt: skip
    await _change(url, name, lambda _: lifecycle.create(spec, 1))
    started = await _change(url, name, lambda e: lifecycle.start(e, np.ones(BUCKETS, dtype=bool), 2))
    key = policy_key("s", name, "treatment", started.created_ms)
    user, treated = pseudonymize("restart-user", b"k"), ((name, "treatment"),)

    first = ShardCore(config, url)
    decided = await _decide_and_learn(first, user, range(9), treated)
    assert {d.policy for d in decided} == {"thompson"}
    [pending] = await first.recommend([RecommendCall(user, "s", 1, assignments=treated)])
    assert isinstance(pending, Decision)
    before = await first.user_state(user)
    assert before[key]["n_updates"] == 9 and before["s"]["n_updates"] == 0
    # A crash: the decisions are written behind, no snapshot was taken (snapshot_every 1000).
    await first.stop_background()
    await first.write_behind.drain()
    await first.store.close()

    second = ShardCore(config, url)
    assert await second.user_state(user) == before  # rebuilt from the log alone
    late = FeedbackCall(user, f"{user}-late", pending.items[0].item_id, Signal.CLICK.value, 1.0,
                        int(time.time() * 1000), decision_id=pending.decision_id)  # fmt: skip
    assert isinstance((await second.feedback([late]))[0], Recorded)
    after = await second.user_state(user)
    assert after[key]["n_updates"] == 10 and after["s"] == before["s"]
    await second.close()  # snapshots the user

    third = ShardCore(config, url)
    try:
        assert await third.user_state(user) == after  # from the snapshot
        assert third.write_behind.unsnapshotted == 0
        # A user of the control (no policy of its own) and a user outside: the surface's policy.
        [plain] = await third.recommend([RecommendCall(user, "s", 1, assignments=((name, "control"),))])
        assert isinstance(plain, Decision) and plain.policy == "ucb1"
        await _change(url, name, lambda e: lifecycle.stop(e, 3))
        await third.experiments.refresh()
        [back] = await third.recommend([RecommendCall(user, "s", 1, assignments=treated)])
        assert isinstance(back, Decision) and back.policy == "ucb1"  # stale assignment: not served any more
        state = await third.user_state(user)
        assert key not in state and state["s"] == before["s"]
    finally:
        await third.close()
    fourth = ShardCore(config, url)
    try:
        assert key not in await fourth.user_state(user)
    finally:
        await fourth.close()
