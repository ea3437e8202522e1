"""Distinct users a day, for planning experiments, on a real Redis: counts flushed at given times of day
are read back as a day's traffic, scaled from the part of the day the service saw."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from rewardloop.state.keys import surface_traffic_key
from rewardloop.state.traffic import TRAFFIC_TTL_SECONDS, TrafficCounter, daily_users
from rewardloop.workers.redis_server import EmbeddedRedis

UTC = datetime.UTC
TODAY = datetime.datetime(2026, 3, 10, tzinfo=UTC)
YESTERDAY = TODAY - datetime.timedelta(days=1)


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def surface() -> str:
    return f"traffic-{uuid.uuid4().hex[:8]}"


async def seen(redis: aioredis.Redis, surface: str, users: range, at: datetime.datetime) -> None:
    counter = TrafficCounter()
    for user in users:
        counter.note(surface, f"user-{user}")
    await counter.flush(redis, now=at)


async def test_a_whole_day_is_read_as_it_is(redis: aioredis.Redis, surface: str) -> None:
    await seen(redis, surface, range(300), YESTERDAY + datetime.timedelta(minutes=1))
    await seen(redis, surface, range(200, 500), YESTERDAY + datetime.timedelta(hours=20))
    await seen(redis, surface, range(1_000, 1_100), TODAY + datetime.timedelta(hours=3))
    users = await daily_users(redis, [surface], now=TODAY + datetime.timedelta(hours=3, minutes=1))
    assert users == pytest.approx(500 * 24 / (24 - 1 / 60), rel=0.03)  # yesterday's, the union


async def test_a_service_started_late_yesterday_scales_the_minutes_it_saw(redis: aioredis.Redis, surface: str) -> None:
    await seen(redis, surface, range(40), YESTERDAY + datetime.timedelta(hours=23, minutes=50))
    users = await daily_users(redis, [surface], now=TODAY + datetime.timedelta(minutes=5))
    assert users == pytest.approx(40 * 24, rel=0.03)  # ten minutes count as the shortest span, an hour
    # Once today is the longer-seen day, today's count is read.
    await seen(redis, surface, range(100, 400), TODAY + datetime.timedelta(minutes=30))
    users = await daily_users(redis, [surface], now=TODAY + datetime.timedelta(hours=6))
    assert users == pytest.approx(300 * 24 / 5.5, rel=0.03)


async def test_a_user_of_two_surfaces_counts_once_from_the_earliest_start(redis: aioredis.Redis) -> None:
    a, b = f"traffic-{uuid.uuid4().hex[:8]}", f"traffic-{uuid.uuid4().hex[:8]}"
    await seen(redis, a, range(100), TODAY + datetime.timedelta(hours=2))
    await seen(redis, b, range(50, 150), TODAY + datetime.timedelta(hours=4))
    users = await daily_users(redis, [a, b], now=TODAY + datetime.timedelta(hours=8))
    assert users == pytest.approx(150 * 24 / 6, rel=0.03)
    assert await daily_users(redis, [f"traffic-{uuid.uuid4().hex[:8]}"], now=TODAY) == 0.0


async def test_counts_kept_before_they_noted_their_start_are_taken_as_whole_days(
    redis: aioredis.Redis, surface: str
) -> None:
    key = surface_traffic_key(surface, YESTERDAY.strftime("%Y%m%d"))
    await redis.pfadd(key, *(f"user-{u}" for u in range(80)))
    await seen(redis, surface, range(10), TODAY + datetime.timedelta(hours=1))
    users = await daily_users(redis, [surface], now=TODAY + datetime.timedelta(hours=12))
    assert users == pytest.approx(80, rel=0.03)


async def test_a_days_keys_expire(redis: aioredis.Redis, surface: str) -> None:
    await seen(redis, surface, range(5), TODAY)
    keys = [k async for k in redis.scan_iter(match=f"*{surface}*")]
    assert len(keys) == 2
    for key in keys:
        assert 0 < await redis.ttl(key) <= TRAFFIC_TTL_SECONDS
