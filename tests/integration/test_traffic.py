"""Distinct users a day, for planning experiments, on a real Redis: counts flushed at given times of day
are read back as a day's traffic, scaled from the part of the day the service saw."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from rewardloop.state.keys import surface_traffic_key, traffic_since_key
from rewardloop.state.traffic import TRAFFIC_TTL_SECONDS, TrafficCounter, daily_users
from rewardloop.workers.redis_server import EmbeddedRedis

UTC = datetime.UTC
HOUR = datetime.timedelta(hours=1)


def day(n: int) -> datetime.datetime:
    """Midnight of a day of its own per test: a day's start is shared by every surface counted then."""
    return datetime.datetime(2026, 3, 1, tzinfo=UTC) + datetime.timedelta(days=n)


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def surface() -> str:
    return f"traffic-{uuid.uuid4().hex[:8]}"


async def seen(
    counter: TrafficCounter, redis: aioredis.Redis, surface: str, users: range, at: datetime.datetime
) -> None:
    for user in users:
        counter.note(surface, f"user-{user}")
    await counter.flush(redis, now=at)


async def test_a_whole_day_is_read_as_it_is(redis: aioredis.Redis, surface: str) -> None:
    today = day(1)
    counter = TrafficCounter(started=today - 50 * HOUR)  # running since the day before yesterday
    await seen(counter, redis, surface, range(300), today - 23 * HOUR)
    await seen(counter, redis, surface, range(200, 500), today - 4 * HOUR)
    await seen(counter, redis, surface, range(1_000, 1_100), today + 3 * HOUR)
    users = await daily_users(redis, [surface], now=today + 3 * HOUR)
    assert users == pytest.approx(500, rel=0.03)  # yesterday's, the union


async def test_a_quiet_morning_is_not_scaled_up_while_the_service_was_running(
    redis: aioredis.Redis, surface: str
) -> None:
    today = day(3)
    counter = TrafficCounter(started=today - 50 * HOUR)
    for midnight in (today - 24 * HOUR, today):
        await counter.flush(redis, now=midnight + datetime.timedelta(seconds=1))  # nobody at night
        await seen(counter, redis, surface, range(100), midnight + 7 * HOUR)  # the first users at 07:00
    users = await daily_users(redis, [surface], now=today + 12 * HOUR)
    assert users == pytest.approx(100, rel=0.03)  # yesterday's whole day, not 17 hours of it


async def test_a_service_started_late_yesterday_scales_the_minutes_it_saw(redis: aioredis.Redis, surface: str) -> None:
    today = day(5)
    counter = TrafficCounter(started=today - datetime.timedelta(minutes=10))
    await seen(counter, redis, surface, range(40), today - datetime.timedelta(minutes=10))
    users = await daily_users(redis, [surface], now=today + datetime.timedelta(minutes=5))
    assert users == pytest.approx(40 * 24, rel=0.03)  # ten minutes count as the shortest span, an hour
    # Once today is the longer-seen day, today's count is read: counted from midnight on.
    await seen(counter, redis, surface, range(100, 400), today + datetime.timedelta(minutes=30))
    users = await daily_users(redis, [surface], now=today + 6 * HOUR)
    assert users == pytest.approx(300 * 24 / 6, rel=0.03)


async def test_the_earliest_front_to_count_a_day_sets_its_start(redis: aioredis.Redis) -> None:
    today = day(7)
    a, b = f"traffic-{uuid.uuid4().hex[:8]}", f"traffic-{uuid.uuid4().hex[:8]}"
    late, early = TrafficCounter(started=today + 4 * HOUR), TrafficCounter(started=today + 2 * HOUR)
    await seen(late, redis, b, range(50, 150), today + 4 * HOUR)  # the later front flushes first
    await seen(early, redis, a, range(100), today + 5 * HOUR)
    users = await daily_users(redis, [a, b], now=today + 8 * HOUR)
    assert users == pytest.approx(150 * 24 / 6, rel=0.03)  # a user of both surfaces counts once
    assert await daily_users(redis, [f"traffic-{uuid.uuid4().hex[:8]}"], now=today + 8 * HOUR) == 0.0


async def test_counts_kept_before_starts_were_noted_are_taken_as_whole_days(
    redis: aioredis.Redis, surface: str
) -> None:
    today = day(9)
    key = surface_traffic_key(surface, (today - HOUR).strftime("%Y%m%d"))
    await redis.pfadd(key, *(f"user-{u}" for u in range(80)))
    await seen(TrafficCounter(started=today + HOUR), redis, surface, range(10), today + HOUR)
    users = await daily_users(redis, [surface], now=today + 12 * HOUR)
    assert users == pytest.approx(80, rel=0.03)


async def test_a_days_keys_expire(redis: aioredis.Redis, surface: str) -> None:
    today = day(11)
    await seen(TrafficCounter(started=today), redis, surface, range(5), today)
    keys = [surface_traffic_key(surface, today.strftime("%Y%m%d")), traffic_since_key(today.strftime("%Y%m%d"))]
    for key in keys:
        assert 0 < await redis.ttl(key) <= TRAFFIC_TTL_SECONDS
