"""Crash recovery: every acknowledged feedback event is in the rebuilt state, once.

Traffic runs while a shard actor is killed (Ray restarts it empty; it rebuilds users
from snapshot + log), and while the whole service is stopped without a final snapshot
and started again. The producer behaves like a real one: it retries an event with the
same event_id until it is acknowledged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import numpy as np
import pytest
import ray
import redis

from rewardloop.client import AsyncClient, RewardloopError, Signal
from rewardloop.server.app import Service
from rewardloop.server.status import ServiceError
from rewardloop.state.keys import UserKeys, pseudonymize
from rewardloop.state.retention import Retention
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.redis_server import EmbeddedRedis

pytestmark = pytest.mark.cluster
SURFACE = "eg"
T = TypeVar("T")
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}


class Producer:
    """Recommend + record for a set of users until stopped; remembers what was acked."""

    def __init__(self, target: str, prefix: str, users: int = 12):
        self.target = target
        self.users = [f"{prefix}-{k}" for k in range(users)]
        self.acked: dict[str, tuple[str, str, float]] = {}  # event_id -> (user, item, reward)
        self.unavailable = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        async with AsyncClient(self.target, default_timeout=5) as client:
            await asyncio.gather(*(self._user_loop(client, u) for u in self.users))

    async def _user_loop(self, client: AsyncClient, user: str) -> None:
        rng = np.random.default_rng(abs(hash(user)) % 2**32)
        step = 0
        while not self._stop.is_set():
            step += 1
            rec = await self._retry(client.recommend, user, SURFACE)
            item = rec.items[0].item_id
            click = float(rng.random() < 0.3)
            event_id = f"{user}:{step}"
            record = functools.partial(
                client.record, user, item, Signal.CLICK, click,
                decision_id=rec.decision_id, surface=SURFACE, event_id=f"{user}:{step}",
            )  # fmt: skip
            event_id = f"{user}:{step}"
            result = await self._retry(record)
            # A flagged event is recorded but trains nothing: here, feedback naming a decision
            # that a crash lost before it was written behind.
            if not result.flag:
                self.acked[event_id] = (user, item, result.reward)
            # A producer's retry after a lost ack: must come back as a duplicate.
            if step % 7 == 0:
                again = await self._retry(record)
                assert again.duplicate

    async def _retry(self, attempt: Callable[..., Awaitable[T]], *args: object) -> T:
        while True:
            try:
                return await attempt(*args)
            except RewardloopError as exc:
                # What a producer may retry with the same event_id: the service was
                # down or the call was cut off; anything else is a real failure.
                if exc.code not in RETRYABLE:
                    raise
                self.unavailable += 1
                await asyncio.sleep(0.05)

    def expected(self) -> dict[str, tuple[Counter[str], dict[str, float]]]:
        per_user: dict[str, tuple[Counter[str], dict[str, float]]] = defaultdict(
            lambda: (Counter(), defaultdict(float))
        )
        for user, item, reward in self.acked.values():
            counts, sums = per_user[user]
            counts[item] += 1
            sums[item] += reward
        return per_user


async def _incarnation(service: Service, shard: int) -> str:
    for _ in range(100):
        try:
            _, incarnation = await service.actors[shard].ready.remote()
            return str(incarnation)
        except ray.exceptions.RayError:
            await asyncio.sleep(0.1)
    raise AssertionError("shard did not come back")


async def _restarted(service: Service, shard: int, old: str) -> None:
    """Wait until a different incarnation answers (ray.kill is asynchronous)."""
    for _ in range(200):
        if await _incarnation(service, shard) != old:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"shard {shard} was not restarted")


async def _user_state(service: Service, pseudonym: str) -> dict:  # type: ignore[type-arg]
    assert service.router is not None
    for _ in range(100):  # a just-killed shard takes a moment to come back
        try:
            return await service.router.user_state(pseudonym)
        except ServiceError:
            await asyncio.sleep(0.1)
    raise AssertionError("shard did not come back")


async def assert_state_matches(service: Service, producer: Producer, config: ServiceConfig) -> None:
    items = config.surfaces[SURFACE].items
    assert service.router is not None
    for user, (counts, sums) in producer.expected().items():
        state = await _user_state(service, pseudonymize(user, config.pseudonym_key.encode()))
        learned = state[SURFACE]
        # Exact whatever the order of the additions: counts and click rewards are whole numbers.
        assert learned["counts"] == [float(counts[i]) for i in items], user
        assert learned["reward_sums"] == [sums.get(i, 0.0) for i in items], user
        assert learned["n_updates"] == sum(counts.values())


async def _kill_shards_under_traffic(service: Service, producer: Producer) -> None:
    """Shards 0, 1, 0 killed while ``producer`` runs; then both again, so every user is rebuilt."""
    traffic = asyncio.create_task(producer.run())
    for victim in (0, 1, 0):
        await asyncio.sleep(1.0)
        before = len(producer.acked)
        incarnation = await _incarnation(service, victim)
        ray.kill(service.actors[victim], no_restart=False)
        await _restarted(service, victim, incarnation)
        assert len(producer.acked) > before, "no traffic while the shard was up"
    await asyncio.sleep(1.5)
    producer.stop()
    await traffic
    assert len(producer.acked) > 50, "too little traffic to prove anything"
    # Kill both again so every user is rebuilt from Redis before we look.
    for actor in service.actors:
        ray.kill(actor, no_restart=False)


# Three shard restarts, each a new Ray worker that imports the service (and, under `make test`,
# starts coverage): past the default 300 s guard twice on a box at load ~20.
@pytest.mark.timeout(900)
async def test_killed_shard_loses_no_acknowledged_feedback(service: Service, service_config: ServiceConfig) -> None:
    producer = Producer(service.target, "kill")
    await _kill_shards_under_traffic(service, producer)
    await assert_state_matches(service, producer, service_config)


@pytest.mark.timeout(900)
async def test_compaction_under_crashes_loses_no_acknowledged_feedback(
    ray_cluster: None, redis_server: EmbeddedRedis, service_config: ServiceConfig
) -> None:
    """Logs kept 1 s and a snapshot every 3 events: compaction trims the feedback logs all along."""
    config = dataclasses.replace(
        service_config, surfaces={SURFACE: service_config.surfaces[SURFACE]}, experiments={},
        retention=Retention(1, 3600), snapshot_every=3,
    )  # fmt: skip
    service = await Service(config, redis_server.url, "127.0.0.1:0", shard_prefix="compact").start()
    try:
        producer = Producer(service.target, "compact")
        await _kill_shards_under_traffic(service, producer)
        await assert_state_matches(service, producer, config)
        client = redis.Redis.from_url(redis_server.url)
        logged = [
            client.xlen(UserKeys(pseudonymize(u, config.pseudonym_key.encode())).feedback_log) for u in producer.users
        ]
        client.close()
        acked = Counter(user for user, _, _ in producer.acked.values())
        assert sum(logged) < sum(acked.values()) / 2, (logged, acked)  # most entries were compacted away
    finally:
        await service.stop(grace=0.5)


@pytest.mark.timeout(900)
async def test_whole_service_restart_loses_no_acknowledged_feedback(
    ray_cluster: None, redis_server: EmbeddedRedis, service_config: ServiceConfig
) -> None:
    first = await Service(service_config, redis_server.url, "127.0.0.1:0", shard_prefix="restart-a").start()
    port = first.port
    producer = Producer(first.target, "restart")
    traffic = asyncio.create_task(producer.run())
    await asyncio.sleep(2.0)
    # A crash as far as Redis can tell: no final snapshot, in-flight calls cut off.
    await first.stop(grace=0, flush=False)
    acked_before_restart = len(producer.acked)
    second = await Service(service_config, redis_server.url, f"127.0.0.1:{port}", shard_prefix="restart-b").start()
    try:
        await asyncio.sleep(2.0)
        producer.stop()
        await traffic
        assert len(producer.acked) > acked_before_restart > 20
        await assert_state_matches(second, producer, service_config)
    finally:
        await second.stop(grace=0.5)
