"""Learned segments through the real service: fitted from the shards' samples, listed and explained by
the admin API, served as priors, and rebuilt exactly after a shard or the whole service restarts."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest
import ray
from sklearn.metrics import adjusted_rand_score

from rewardloop.client import AsyncClient
from rewardloop.demo.drive import run_population
from rewardloop.learning.segments.linear_prior import linear_strength
from rewardloop.learning.surface import DEFAULT_STRENGTH
from rewardloop.server.app import Service
from rewardloop.simulator import Population
from rewardloop.state.keys import pseudonymize
from rewardloop.v1 import admin_pb2, admin_pb2_grpc, assigner_pb2, assigner_pb2_grpc
from rewardloop.v1 import experiments_pb2 as xp
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.redis_server import EmbeddedRedis
from tests.integration.test_recovery import _incarnation, _restarted

pytestmark = pytest.mark.cluster

# A Bayes classifier that knows the true group means reaches an adjusted Rand index of 1.0 on these
# users' uniform plays (0.47 with 90 users x 40 plays: then no method can be asked 0.7).
POPULATION = Population(n_users=150, n_items=12, n_segments=3, taste_strength=3.0, base_ctr=0.05, seed=3)
ITEMS = list(POPULATION.item_ids)
LINEAR_POPULATION = Population(n_users=120, n_items=6, taste_dim=4, taste_strength=2.0, base_ctr=0.03, seed=4)
LINEAR_ITEMS = list(LINEAR_POPULATION.item_ids)
LINEAR_FEATURES = [*LINEAR_POPULATION.user_feature_names, *LINEAR_POPULATION.context_names]
CONFIG = ServiceConfig.from_dict(
    {
        "service": {
            "shards": 2,
            "segment_fit_seconds": 0,
            "quality": {"burst_per_second": 1_000_000, "burst_per_minute": 1_000_000},
        },
        "surfaces": {
            # Uniform plays (epsilon 1): every user's evidence covers every item, as in the recovery test of
            # tests/unit/test_segments.py; adaptive policies play mostly what users like.
            "seg": {
                "algorithm": "epsilon_greedy",
                "params": {"epsilon": 1.0},
                "items": ITEMS,
                "cold_start": {"segments": True},
            },
            "seg_off": {"algorithm": "thompson", "items": ITEMS, "cold_start": {"segments": False}},
            "seg_ctx": {"algorithm": "linucb", "items": ITEMS, "features": {"numeric": ["x"]}},
            # A linear policy without a configured strength: the strength is learned.
            "lin": {"algorithm": "lin_ts", "items": LINEAR_ITEMS, "features": {"numeric": LINEAR_FEATURES}},
        },
    }
)
USERS = [f"seg-{user}" for user in POPULATION.user_ids]
GROUPS = np.array([POPULATION.segment_of(u) for u in range(POPULATION.n_users)])


async def _refresh(service: Service) -> None:
    await asyncio.gather(*(a.refresh_priors.remote() for a in service.actors))


async def _segment_targeting(channel: grpc.aio.Channel, stub: admin_pb2_grpc.AdminStub, hard: dict[str, int]) -> None:
    """An experiment targeting one learned segment enrols exactly the users the segment holds."""
    target = Counter(hard.values()).most_common(1)[0][0]
    spec = xp.ExperimentSpec(
        name="seg-targeted", primary_metric=xp.Metric(source="click"),
        variants=[xp.Variant(name="control", weight=1), xp.Variant(name="treatment", weight=1)],
        targeting=[xp.TargetingCondition(attribute="segment.seg", operator="in", values=[str(target)])],
    )  # fmt: skip
    await stub.CreateExperiment(xp.CreateExperimentRequest(spec=spec))
    await stub.StartExperiment(xp.ExperimentRequest(name="seg-targeted"))
    assigner = assigner_pb2_grpc.AssignerStub(channel)
    previous: set[str] = set()
    for _ in range(40):  # the front's catalogue refreshes every second: two polls in a row must agree
        replies = [
            await assigner.Assign(assigner_pb2.AssignRequest(user_id=u, experiments=["seg-targeted"])) for u in USERS
        ]
        enrolled = {u for u, r in zip(USERS, replies, strict=True) if r.assignments}
        if enrolled and enrolled == previous:
            break
        previous = enrolled
        await asyncio.sleep(0.25)
    assert enrolled == {u for u in USERS if hard[u] == target}
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        spec.name, spec.targeting[0].attribute = "seg-bad", "segment.seg_off"
        await stub.CreateExperiment(xp.CreateExperimentRequest(spec=spec))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.value.details().startswith("spec.targeting[0].attribute: 'seg_off' is not a surface that learns")
    await stub.StopExperiment(xp.StopExperimentRequest(name="seg-targeted"))
    await stub.DeleteExperiment(xp.ExperimentRequest(name="seg-targeted"))


async def _memberships(stub: admin_pb2_grpc.AdminStub) -> dict[str, dict[int, float]]:
    out = {}
    for user in USERS:
        reply = await stub.GetMembership(admin_pb2.GetMembershipRequest(surface="seg", user_id=user))
        out[user] = {m.segment_id: m.probability for m in reply.memberships}
    return out


@pytest.mark.timeout(900)
async def test_segments_are_learned_listed_served_and_survive_restarts(
    ray_cluster: None, redis_server: EmbeddedRedis
) -> None:
    service = await Service(CONFIG, redis_server.url, "127.0.0.1:0", shard_prefix="segments").start()
    try:
        async with AsyncClient(service.target, default_timeout=30) as client:
            channel = grpc.aio.insecure_channel(service.target)
            stub = admin_pb2_grpc.AdminStub(channel)
            # Before any fit: version 0, no memberships, a prior from the population's default strength.
            empty = await stub.ListSegments(admin_pb2.ListSegmentsRequest(surface="seg"))
            assert empty.version == 0 and not empty.segments
            await run_population(
                client, POPULATION, "seg", 60, seed=1, user_prefix="seg-", between_rounds=lambda: _refresh(service)
            )
            await _refresh(service)  # the samples are published
            versions = await service.fitter.fit_now.remote()
            assert versions == {"seg": 1}, versions  # seg_off and the contextual surface learn none
            await _refresh(service)  # the shards load version 1

            listed = await stub.ListSegments(admin_pb2.ListSegmentsRequest(surface="seg", top_items=len(ITEMS)))
            assert listed.version == 1 and listed.previous_version == 0
            assert 2 <= len(listed.segments) <= 5, listed
            assert abs(sum(s.share for s in listed.segments) - 1.0) < 1e-9
            assert all(s.is_new and s.prior_strength >= 1.0 for s in listed.segments)
            lifts = [[i.lift for i in s.top_items] for s in listed.segments]
            assert all(lift == sorted(lift, reverse=True) for lift in lifts)

            before = await _memberships(stub)
            hard = [max(before[u], key=before[u].__getitem__) for u in USERS]
            ari = adjusted_rand_score(GROUPS, hard)
            assert ari >= 0.7, ari
            # Each segment's mean rewards follow the true click rates of the group most of its users are from.
            p = POPULATION.click_matrix()
            for segment in listed.segments:
                members = GROUPS[[h == segment.id for h in hard]]
                group = int(np.bincount(members).argmax())
                means = {i.item_id: i.mean_reward for i in segment.top_items}
                learned = [means[item] for item in ITEMS]
                assert np.corrcoef(learned, p[group == GROUPS].mean(axis=0))[0, 1] >= 0.8, segment

            # A refit of unchanged samples keeps the version.
            assert await service.fitter.fit_now.remote() == {"seg": 1}

            await _segment_targeting(channel, stub, dict(zip(USERS, hard, strict=True)))

            # A killed shard rebuilds the same memberships from the user's state and the stored model.
            incarnation = await _incarnation(service, 0)
            ray.kill(service.actors[0], no_restart=False)
            await _restarted(service, 0, incarnation)
            _assert_same(before, await _memberships(stub))

            # More traffic, a refit: version 2 names the segments it found again by their ids.
            await run_population(
                client, POPULATION, "seg", 10, seed=2, user_prefix="seg-", first_round=60,
                between_rounds=lambda: _refresh(service),
            )  # fmt: skip
            await _refresh(service)
            assert await service.fitter.fit_now.remote() == {"seg": 2}
            await _refresh(service)
            second = await stub.ListSegments(admin_pb2.ListSegmentsRequest(surface="seg"))
            assert second.version == 2 and second.previous_version == 1
            kept = [s for s in second.segments if not s.is_new]
            assert kept and {s.id for s in kept} <= {s.id for s in listed.segments}
            assert all(0.0 <= s.moved <= 1.0 for s in kept), kept
            before = await _memberships(stub)
            await channel.close()
    finally:
        await service.stop(grace=0.5)

    # The whole service, restarted: the same version, the same memberships.
    async with _admin_of_a_new_service(redis_server, "segments") as stub:
        assert (await stub.ListSegments(admin_pb2.ListSegmentsRequest(surface="seg"))).version == 2
        _assert_same(before, await _memberships(stub))


@contextlib.asynccontextmanager
async def _admin_of_a_new_service(redis_server: EmbeddedRedis, prefix: str) -> AsyncIterator[Any]:
    """An Admin stub of the service started anew on the same Redis; stopped on exit."""
    service = await Service(CONFIG, redis_server.url, "127.0.0.1:0", shard_prefix=prefix).start()
    try:
        async with grpc.aio.insecure_channel(service.target) as channel:
            yield admin_pb2_grpc.AdminStub(channel)
    finally:
        await service.stop(grace=0.5)


def _assert_same(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> None:
    for user in USERS:
        assert before[user].keys() == after[user].keys(), user
        for segment, probability in before[user].items():
            assert after[user][segment] == pytest.approx(probability, rel=1e-9, abs=1e-12), user


@pytest.mark.parametrize(
    ("request_", "method", "code", "field"),
    [
        (admin_pb2.ListSegmentsRequest(surface=""), "ListSegments", grpc.StatusCode.INVALID_ARGUMENT, "surface"),
        (admin_pb2.ListSegmentsRequest(surface="nope"), "ListSegments", grpc.StatusCode.NOT_FOUND, "surface"),
        (admin_pb2.ListSegmentsRequest(surface="ts", top_items=101), "ListSegments",
         grpc.StatusCode.INVALID_ARGUMENT, "top_items"),
        (admin_pb2.ListSegmentsRequest(surface="ctx_linucb"), "ListSegments",
         grpc.StatusCode.FAILED_PRECONDITION, "ctx_linucb"),
        (admin_pb2.GetMembershipRequest(surface="ucb", user_id="u"), "GetMembership",
         grpc.StatusCode.FAILED_PRECONDITION, "cold_start.segments"),
        (admin_pb2.GetMembershipRequest(surface="ts", user_id=""), "GetMembership",
         grpc.StatusCode.INVALID_ARGUMENT, "user_id"),
        (admin_pb2.GetMembershipRequest(surface="nope", user_id="u"), "GetMembership",
         grpc.StatusCode.NOT_FOUND, "surface"),
    ],
)  # fmt: skip
async def test_segment_requests_name_what_is_wrong(
    channel: grpc.aio.Channel, request_: Any, method: str, code: grpc.StatusCode, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await getattr(admin_pb2_grpc.AdminStub(channel), method)(request_)
    assert raised.value.code() == code
    assert field in (raised.value.details() or "")


async def test_a_new_user_has_no_interactions_and_the_shares_as_membership(channel: grpc.aio.Channel) -> None:
    reply = await admin_pb2_grpc.AdminStub(channel).GetMembership(
        admin_pb2.GetMembershipRequest(surface="ts", user_id="segments-never-seen")
    )
    assert reply.interactions == 0.0
    assert reply.version == 0 or abs(sum(m.probability for m in reply.memberships) - 1.0) < 1e-9


@pytest.mark.timeout(600)
async def test_a_linear_surface_learns_its_prior_strength_and_serves_it_after_restarts(
    ray_cluster: None, redis_server: EmbeddedRedis
) -> None:
    service = await Service(CONFIG, redis_server.url, "127.0.0.1:0", shard_prefix="linprior").start()
    user = f"lin-{LINEAR_POPULATION.user_ids[0]}"
    try:
        async with AsyncClient(service.target, default_timeout=30) as client:
            channel = grpc.aio.insecure_channel(service.target)
            stub = admin_pb2_grpc.AdminStub(channel)
            listed = await stub.ListSegments(admin_pb2.ListSegmentsRequest(surface="lin"))
            assert listed.version == 0 and listed.prior_strength == 0.0
            served = await stub.GetMembership(admin_pb2.GetMembershipRequest(surface="lin", user_id=user))
            assert served.prior_strength == DEFAULT_STRENGTH  # before any estimate
            await run_population(
                client, LINEAR_POPULATION, "lin", 12, seed=1, user_prefix="lin-", contextual=True,
                between_rounds=lambda: _refresh(service),
            )  # fmt: skip
            await _refresh(service)  # the samples are published
            assert (await service.fitter.fit_now.remote())["lin"] == 1
            await _refresh(service)  # the shards load it

            listed = await stub.ListSegments(admin_pb2.ListSegmentsRequest(surface="lin"))
            assert listed.version == 1 and not listed.segments
            # What the fitter wrote is the estimate of every sampled user's state, as the shards hold it.
            expected = linear_strength(*await _linear_states(service))
            assert expected is not None and listed.prior_strength == pytest.approx(expected, rel=1e-9)
            assert listed.prior_strength > 5 * DEFAULT_STRENGTH  # these users' coefficients agree
            served = await stub.GetMembership(admin_pb2.GetMembershipRequest(surface="lin", user_id=user))
            assert (served.version, served.prior_strength) == (1, listed.prior_strength)

            incarnation = await _incarnation(service, 0)
            ray.kill(service.actors[0], no_restart=False)
            await _restarted(service, 0, incarnation)
            for shard_user in (user, f"lin-{LINEAR_POPULATION.user_ids[1]}"):  # either shard
                again = await stub.GetMembership(admin_pb2.GetMembershipRequest(surface="lin", user_id=shard_user))
                assert (again.version, again.prior_strength) == (1, listed.prior_strength)
            await channel.close()
    finally:
        await service.stop(grace=0.5)
    async with _admin_of_a_new_service(redis_server, "linprior") as stub:
        again = await stub.GetMembership(admin_pb2.GetMembershipRequest(surface="lin", user_id=user))
        assert (again.version, again.prior_strength) == (1, listed.prior_strength)


async def _linear_states(service: Service) -> tuple[np.ndarray, np.ndarray]:
    """Every user's (arms, d, d) Gram matrices and (arms, d) ``xr`` on ``lin``, from their shards."""
    assert service.router is not None
    grams, xrs = [], []
    for user in LINEAR_POPULATION.user_ids:
        pseudonym = pseudonymize(f"lin-{user}", CONFIG.pseudonym_key.encode())
        arrays = (await service.router.user_state(pseudonym))["lin"]
        grams.append(arrays["gram"])
        xrs.append(arrays["xr"])
    assert len(grams[0]) == len(LINEAR_ITEMS)
    return np.array(grams), np.array(xrs)
