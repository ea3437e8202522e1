"""Dependencies down and access control: the documented status codes, nothing lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rewardloop.client import AsyncClient, Signal, Unauthenticated, Unavailable
from rewardloop.server.app import Service
from rewardloop.state.keys import pseudonymize
from rewardloop.v1 import admin_pb2, admin_pb2_grpc
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.redis_server import EmbeddedRedis

pytestmark = pytest.mark.cluster


@pytest.fixture
async def own_redis_service(
    ray_cluster: None, service_config: ServiceConfig, tmp_path: Path
) -> AsyncIterator[tuple[Service, EmbeddedRedis]]:
    redis_server = EmbeddedRedis(tmp_path / "redis").start()
    service = await Service(service_config, redis_server.url, "127.0.0.1:0", shard_prefix="redis-down").start()
    yield service, redis_server
    await service.stop(grace=0.5, flush=False)
    redis_server.stop()


async def test_redis_down_is_unavailable_and_nothing_acknowledged_is_lost(
    own_redis_service: tuple[Service, EmbeddedRedis], service_config: ServiceConfig
) -> None:
    service, redis_server = own_redis_service
    async with AsyncClient(service.target, default_timeout=5) as client:
        rec = await client.recommend("rd-1", "ucb")
        await client.recommend("rd-cached", "ucb")
        first = await client.record("rd-1", rec.item_ids[0], Signal.CLICK, 1.0, surface="ucb", event_id="rd-e1")
        assert not first.duplicate

        redis_server.stop()
        # Storage down: a write cannot be acknowledged, and says so with UNAVAILABLE.
        with pytest.raises(Unavailable, match="storage unavailable"):
            await client.record("rd-1", rec.item_ids[0], Signal.CLICK, 1.0, surface="ucb", event_id="rd-e2")
        # A user the shard has never seen cannot be loaded either.
        with pytest.raises(Unavailable):
            await client.recommend("rd-new-user", "ucb")
        # A cached user is still served from memory (rd-1 is not: a failed write drops
        # the user from memory, to be rebuilt from Redis, which is the truth).
        assert len((await client.recommend("rd-cached", "ucb")).items) == 1

        redis_server.start()  # same data directory: the AOF brings everything back
        await asyncio.sleep(0.2)
        retried = await client.record("rd-1", rec.item_ids[0], Signal.CLICK, 1.0, surface="ucb", event_id="rd-e2")
        assert not retried.duplicate  # the failed attempt recorded nothing
        again = await client.record("rd-1", rec.item_ids[0], Signal.CLICK, 1.0, surface="ucb", event_id="rd-e1")
        assert again.duplicate  # the one acknowledged before the outage survived it
    assert service.router is not None
    state = await service.router.user_state(pseudonymize("rd-1", service_config.pseudonym_key.encode()))
    assert state["ucb"]["n_updates"] == 2


async def test_bearer_tokens_guard_the_api_but_not_health(
    ray_cluster: None, redis_server: EmbeddedRedis, service_config: ServiceConfig
) -> None:
    service = await Service(
        service_config, redis_server.url, "127.0.0.1:0", auth_tokens=["s3cret"], shard_prefix="auth",
        admin_tokens=["r00t"],
    ).start()  # fmt: skip
    try:
        async with AsyncClient(service.target) as anonymous:
            with pytest.raises(Unauthenticated, match="authorization"):
                await anonymous.recommend("auth-1", "ucb")
        async with AsyncClient(service.target, metadata={"authorization": "Bearer wrong"}) as wrong:
            with pytest.raises(Unauthenticated):
                await wrong.assign("auth-1")
        async with AsyncClient(service.target, metadata={"authorization": "Bearer s3cret"}) as allowed:
            assert len((await allowed.recommend("auth-1", "ucb")).items) == 1
        async with AsyncClient(service.target, metadata={"authorization": "Bearer r00t"}) as admin:
            assert len((await admin.recommend("auth-1", "ucb")).items) == 1  # admin keys are API keys too
        async with grpc.aio.insecure_channel(service.target) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            evaluate = admin_pb2_grpc.AdminStub(channel).EvaluatePolicy
            request = admin_pb2.EvaluatePolicyRequest(surface="nope")
            for token, code in (("s3cret", grpc.StatusCode.PERMISSION_DENIED), ("", grpc.StatusCode.UNAUTHENTICATED)):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await evaluate(request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
                assert err.value.code() == code
            with pytest.raises(grpc.aio.AioRpcError) as err:  # through auth, to the servicer
                await evaluate(request, metadata=(("authorization", "Bearer r00t"),), timeout=10)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await service.stop(grace=0.5)
