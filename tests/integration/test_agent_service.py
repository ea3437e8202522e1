"""An agent surface end to end: gRPC front, shard actors, the trainer actor, Serve replicas, Redis.

Simulated sessions (``demo/agent_driver.py``) go through the SDK; the trainer learns from the
transitions the shards log and publishes versions; the replicas serve them. Then a shard holding
open sessions is killed: the steps it held reach the trainer all the same.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict

import grpc
import numpy as np
import pytest
import ray
import redis

from rewardloop.client import AsyncClient, Signal
from rewardloop.demo.agent_driver import CONTEXT, SdkBackend, by_version, drive, surface_spec, version_number
from rewardloop.learning.agents.checkpoint import loads
from rewardloop.server.app import Service
from rewardloop.state.transitions import transitions_key
from rewardloop.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    feedback_pb2,
    feedback_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
)
from rewardloop.v1 import experiments_pb2 as xp
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.redis_server import EmbeddedRedis
from rewardloop.workers.trainer import checkpoint_key, weights_key

pytestmark = pytest.mark.cluster
SURFACE = "assistant_e2e"
ROUNDS, SESSIONS = 8, 150


def config() -> ServiceConfig:
    return ServiceConfig.from_dict({
        "service": {"shards": 2, "seed": 3, "pseudonym_key": "agent-e2e",
                    "quality": {"burst_per_second": 1_000_000, "burst_per_minute": 1_000_000}},
        "surfaces": {SURFACE: surface_spec(checkpoint_every=400, checkpoint_seconds=1)},
    })  # fmt: skip


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "rounds",
    # Learning to earn more takes ROUNDS rounds (~100 s on 2 cores); `make test` (CI) runs the rest of
    # the test after two, which publish and serve new versions all the same. The same learning through
    # a shard, without Ray, is test_agent_surface.py's, in CI.
    [pytest.param(2, id="serves-new-versions"), pytest.param(ROUNDS, id="earns-more", marks=pytest.mark.slow)],
)
async def test_sessions_through_the_service_train_versions_that_earn_more(
    ray_cluster: None, redis_server: EmbeddedRedis, rounds: int
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.delete(transitions_key(SURFACE), checkpoint_key(SURFACE), weights_key(SURFACE))
    service = await Service(config(), redis_server.url, "127.0.0.1:0", shard_prefix="agent").start()
    try:
        await _bad_input_is_named(service.target)
        async with AsyncClient(service.target, default_timeout=10) as sdk:
            backend = SdkBackend(sdk, SURFACE)
            driven = [await drive(backend, SESSIONS, users=8, seed=100 + k) for k in range(rounds)]
            returns = [float(np.mean([r.ret for r in results])) for results in driven]
            served = [sorted({version_number(v) for r in results for v in r.versions}) for results in driven]
            print("returns", [round(r, 2) for r in returns], "versions", [(s[0], s[-1]) for s in served])
            print("by version", by_version([r for results in driven for r in results]))
            # Every decision names the version that made it; each round is served by newer ones.
            assert served[0][0] == 0 and all(a[-1] <= b[0] + 1 for a, b in itertools.pairwise(served))
            assert served[-1][-1] >= 5 * rounds // 4
            if rounds == ROUNDS:
                # Version 0 is uniform (~0.9 a session); the best one-step policy earns 2.16, the optimum 4.95.
                assert np.mean(returns[-2:]) > 2.0 * returns[0]
                assert np.mean(returns[-2:]) > 2.16

            appended = await _transitions_appended(service)
            agent_turns, bandit_turns = await _bandit_against_the_agent(service.target, sdk)
            # The agent's training data took each of its own users' turns, and none of the bandit's.
            assert await _transitions_appended(service) - appended == len(agent_turns) > 0
            held = await _open_sessions_then_kill_a_shard(service, sdk)

            # The trainer killed: Ray restarts its actor, the front's stats sampler restarts its loop
            # (the test does not call it), and it goes on publishing from its checkpoint.
            trainer = ray.get_actor(f"trainer-{SURFACE}", namespace="rewardloop")
            published = int(client.hget(weights_key(SURFACE), "version"))  # type: ignore[arg-type]
            ray.kill(trainer, no_restart=False)
            await drive(backend, 40, users=8, seed=999)
            for _ in range(150):
                if int(client.hget(weights_key(SURFACE), "version")) > published:  # type: ignore[arg-type]
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("the restarted trainer published nothing")
        for _ in range(100):  # the trainer catches up with the stream
            await asyncio.sleep(0.2)
            if not client.xlen(transitions_key(SURFACE)) or not (await trainer.status.remote())["since_checkpoint"]:
                break
        await trainer.checkpoint_now.remote()
        _, extra = loads(client.get(checkpoint_key(SURFACE)))  # type: ignore[arg-type]
        assert held <= set(extra["seen"])
        assert not bandit_turns & set(extra["seen"])
    finally:
        await service.stop(grace=1.0)
        client.close()


async def _bad_input_is_named(target: str) -> None:
    """Agent surfaces' own mistakes get INVALID_ARGUMENT naming the field, and change nothing."""
    context = common_pb2.Context(numeric=dict(zip(CONTEXT, [1.0, 0, 0, 0, 0, 1.0, 0], strict=True)))
    async with grpc.aio.insecure_channel(target) as channel:
        recommender = recommender_pb2_grpc.RecommenderStub(channel)
        feedback = feedback_pb2_grpc.FeedbackStub(channel)
        admin = admin_pb2_grpc.AdminStub(channel)
        calls = [
            (
                recommender.Recommend(
                    recommender_pb2.RecommendRequest(user_id="bad", surface=SURFACE, context=context, n=2)
                ),
                "n",
            ),
            (recommender.Recommend(recommender_pb2.RecommendRequest(user_id="bad", surface=SURFACE)), "context"),
            (admin.EvaluatePolicy(admin_pb2.EvaluatePolicyRequest(surface=SURFACE)), "surface"),
        ]
        for call, field in calls:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
            assert field in (error.value.details() or ""), error.value.details()
        ok = await recommender.Recommend(
            recommender_pb2.RecommendRequest(user_id="bad", surface=SURFACE, context=context)
        )
        wrong_item = feedback_pb2.FeedbackEvent(
            event_id="e1", user_id="bad", decision_id=ok.decision_id, item_id="not-an-action",
            signal=feedback_pb2.SIGNAL_SESSION_END, value=1,
        )  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await feedback.Record(wrong_item)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "item_id" in (error.value.details() or "")


async def _transitions_appended(service: Service) -> int:
    """Agent transitions the shards appended (every session of the experiment has ended)."""
    stats = await asyncio.gather(*(a.stats.remote() for a in service.actors))
    return int(sum(s["agent_transitions"] for s in stats))


class _ByVariant(SdkBackend):
    """The SDK backend, noting each decision's variant of ``experiment`` and the policy that made it."""

    def __init__(self, client: AsyncClient, experiment: str) -> None:
        super().__init__(client, SURFACE)
        self.experiment = experiment
        self.variant_of: dict[str, str] = {}
        self.policies: dict[str, set[str]] = defaultdict(set)
        self.decided: dict[str, set[str]] = defaultdict(set)

    async def decide(self, user: str, context: dict[str, float]) -> tuple[str, str, str]:
        rec = await self.client.recommend(user, self.surface, context=context)
        variant = rec.assignments[self.experiment]
        assert self.variant_of.setdefault(user, variant) == variant  # sticky
        self.policies[variant].add(rec.policy)
        self.decided[variant].add(rec.decision_id)
        return rec.decision_id, rec.items[0].item_id, rec.model_version


async def _bandit_against_the_agent(target: str, sdk: AsyncClient) -> tuple[set[str], set[str]]:
    """A policy experiment through the service: its bandit variant's users are decided by lin_ts over
    the agent's actions (per user), the others' by the agent, each variant's outcomes attributed to
    it. The decisions of each variant (the trainer must learn from the agent's only)."""
    name = "bandit-vs-agent"
    spec = xp.ExperimentSpec(
        name=name, surfaces=[SURFACE], layer="agent-e2e", no_auto_stop=True, no_cuped=True,
        variants=[xp.Variant(name="agent", weight=1),
                  xp.Variant(name="bandit", weight=1, policies={SURFACE: xp.SurfacePolicy(algorithm="lin_ts")})],
        primary_metric=xp.Metric(source="completion", aggregate="sum"),
    )  # fmt: skip
    async with grpc.aio.insecure_channel(target) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        await admin.CreateExperiment(xp.CreateExperimentRequest(spec=spec), timeout=5)
        await admin.StartExperiment(xp.ExperimentRequest(name=name), timeout=5)
        await asyncio.sleep(1.5)  # the front's catalogue refreshes every second
        backend = _ByVariant(sdk, name)
        sessions = await drive(backend, 120, users=20, seed=500)
        assert dict(backend.policies) == {"agent": {"dqn"}, "bandit": {"lin_ts"}}
        results = await admin.GetExperimentResults(xp.ExperimentRequest(name=name), timeout=10)
        users = {v: sum(1 for u in backend.variant_of.values() if u == v) for v in ("agent", "bandit")}
        assert {v.variant: v.users for v in results.variants} == users
        returns = {v: np.mean([r.ret for r in sessions if backend.variant_of[r.user] == v]) for v in users}
        (primary,) = [c for c in results.comparisons if c.role == "primary"]
        means = f"{primary.variant_mean:.2f} (bandit) vs {primary.control_mean:.2f} (agent)"
        print(f"bandit vs agent: return a session {returns}; completions a user {means}, {primary.verdict}")
        await admin.StopExperiment(xp.StopExperimentRequest(name=name, winner="agent"), timeout=5)
    await asyncio.sleep(1.5)  # every catalogue knows it stopped: the users are all the agent's again
    return backend.decided["agent"], backend.decided["bandit"]


async def _open_sessions_then_kill_a_shard(service: Service, sdk: AsyncClient) -> set[str]:
    """Users with a session open on every shard: one decision each, rewarded; a shard is killed
    (Ray restarts it empty); the users end their sessions. The decisions whose steps the dead shard
    held, which must all reach the trainer."""
    observation = dict(zip(CONTEXT, [1.0, 0, 0, 0, 0, 1.0, 0], strict=True))
    held = set()
    users = [f"crash-user-{k}" for k in range(12)]
    decisions = {}
    for user in users:
        rec = await sdk.recommend(user, SURFACE, context=observation)
        await sdk.record(user, rec.items[0].item_id, Signal.COMPLETION, 0.5, decision_id=rec.decision_id)
        decisions[user] = rec
        held.add(rec.decision_id)
    old = await service.actors[0].ready.remote()
    ray.kill(service.actors[0], no_restart=False)
    for _ in range(200):
        try:
            if await service.actors[0].ready.remote() != old:
                break
        except ray.exceptions.RayError:
            pass
        await asyncio.sleep(0.1)
    for user in users:  # retried until the restarted shard answers
        for _ in range(100):
            try:
                rec = await sdk.recommend(user, SURFACE, context=observation)
                await sdk.record(user, rec.items[0].item_id, Signal.SESSION_END, 1.0, decision_id=rec.decision_id)
                held.add(rec.decision_id)
                break
            except Exception:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{user}: the service did not come back")
    return held
