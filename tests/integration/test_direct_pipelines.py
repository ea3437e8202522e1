"""state/direct.py against a real Redis: replies in order, error replies in their place without
desyncing the connection, a killed connection retried, a cancelled round trip leaving nothing behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from rewardloop.state.direct import DirectPipelines
from rewardloop.state.keys import UserKeys
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.messages import Decision, FeedbackCall, RecommendCall, Recorded
from rewardloop.workers.redis_server import EmbeddedRedis
from rewardloop.workers.shard import ShardCore
from tests.conftest import ITEMS

KEY = "t-direct:"
DB = 11
# The ``pipelines`` fixture: DirectPipelines(client, max_connections) for the test, closed after it.
Pipelines = Callable[..., DirectPipelines]
CONFIG = {"service": {"shards": 1, "seed": 5}, "surfaces": {"s": {"algorithm": "thompson", "items": ITEMS[:4]}}}


@pytest.fixture
async def pipelines(client: aioredis.Redis) -> AsyncIterator[Pipelines]:
    """Makes ``DirectPipelines`` on ``client``; every one made is closed after the test."""
    made: list[DirectPipelines] = []

    def make(max_connections: int = 16) -> DirectPipelines:
        made.append(DirectPipelines(client, max_connections))
        return made[-1]

    yield make
    for direct in made:
        await direct.close()


@pytest.fixture
async def client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_server.url)
    yield redis
    keys = [k async for k in redis.scan_iter(f"{KEY}*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def test_replies_come_in_order_with_error_replies_in_their_place(pipelines: Pipelines) -> None:
    direct = pipelines()
    pipe = direct.pipeline()
    pipe.set(f"{KEY}a", "1")
    pipe.incr(f"{KEY}a")
    pipe.hset(f"{KEY}a", "f", "v")  # WRONGTYPE: the next reply is still read
    pipe.get(f"{KEY}a")
    replies = await direct.execute(pipe)
    assert replies[:2] == [b"OK", 2] and replies[3] == b"2"
    assert isinstance(replies[2], ResponseError) and "WRONGTYPE" in str(replies[2])
    # The same connection again, in step with its replies.
    pipe = direct.pipeline()
    pipe.incr(f"{KEY}a")
    assert await direct.execute(pipe) == [3] and direct.connections == 1
    assert await direct.execute(direct.pipeline()) == []
    await direct.close()
    assert direct.connections == 0


async def test_a_connection_the_server_closed_is_reopened_before_the_commands_go(
    client: aioredis.Redis, pipelines: Pipelines
) -> None:
    direct = pipelines()
    pipe = direct.pipeline()
    pipe.client_id()
    [first] = await direct.execute(pipe)
    assert await client.client_kill_filter(_id=first) == 1
    await asyncio.sleep(0.1)  # the close reaches this side, as it has when a connection was idle
    pipe = direct.pipeline()
    pipe.client_id()
    pipe.set(f"{KEY}b", "x")
    [second, ok] = await direct.execute(pipe)
    assert second != first and ok == b"OK" and direct.connections == 1


async def test_an_idle_connection_whose_check_fails_is_reopened(pipelines: Pipelines) -> None:
    direct = pipelines()
    pipe = direct.pipeline()
    pipe.set(f"{KEY}d", "z")
    await direct.execute(pipe)
    [idle] = direct._idle

    async def broken() -> bool:  # as can_read reports a connection whose buffer went away
        raise RedisConnectionError("Error while reading from the socket")

    idle.can_read = broken  # type: ignore[method-assign]
    pipe = direct.pipeline()
    pipe.get(f"{KEY}d")
    assert await direct.execute(pipe) == [b"z"]


async def test_a_cancelled_round_trip_closes_its_connection_and_the_next_gets_its_own_replies(
    pipelines: Pipelines,
) -> None:
    direct = pipelines()
    pipe = direct.pipeline()
    pipe.blpop([f"{KEY}empty"], timeout=1)  # its reply (nil) would come a second later
    waiting = asyncio.get_running_loop().create_task(direct.execute(pipe))
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert direct.connections == 0  # closed, not put back with a reply still to come
    pipe = direct.pipeline()
    pipe.set(f"{KEY}c", "y")
    pipe.get(f"{KEY}c")
    assert await direct.execute(pipe) == [b"OK", b"y"]
    await asyncio.sleep(1.0)  # past the BLPOP's timeout: its nil went nowhere
    pipe = direct.pipeline()
    pipe.get(f"{KEY}c")
    assert await direct.execute(pipe) == [b"y"]


async def test_round_trips_at_once_open_at_most_max_connections(pipelines: Pipelines) -> None:
    direct = pipelines(max_connections=3)

    async def incr() -> list[object]:
        pipe = direct.pipeline()
        pipe.incr(f"{KEY}n")
        return await direct.execute(pipe)

    replies = await asyncio.gather(*(incr() for _ in range(40)))
    assert sorted(r[0] for r in replies) == list(range(1, 41))
    assert 1 <= direct.connections <= 3


async def test_a_shard_whose_redis_lost_its_scripts_loads_them_and_writes_through(redis_server: EmbeddedRedis) -> None:
    """Redis restarted without the scripts (SCRIPT FLUSH): the durable write and the write behind,
    both on direct connections, load them again and write everything once."""
    url = redis_server.url.rsplit("/", 1)[0] + f"/{DB}"
    shard = ShardCore(ServiceConfig.from_dict(CONFIG), url)
    await shard.store.redis.flushdb()
    try:
        for round_ in range(2):
            user = f"{round_:032x}"
            [decision] = await shard.recommend([RecommendCall(user, "s", 2)])
            assert isinstance(decision, Decision)
            await shard.store.redis.script_flush()  # before the write behind and the Record
            now_ms = int(time.time() * 1000)
            item = decision.items[0].item_id
            event = FeedbackCall(user, f"e{round_}", item, 1, 1.0, now_ms, decision.decision_id, "s")
            [recorded] = await shard.feedback([event])
            assert isinstance(recorded, Recorded) and not recorded.duplicate
            await shard.flush()
            keys = UserKeys(user)
            assert await shard.store.redis.xlen(keys.feedback_log) == 1
            assert await shard.store.redis.hget(keys.decision_index, decision.decision_id) is not None
            assert await shard.store.redis.exists(keys.snapshot)
    finally:
        await shard.close()
