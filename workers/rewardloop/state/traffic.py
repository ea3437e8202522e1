"""Distinct users per surface and day, for planning experiments ("at current traffic this experiment
detects the MDE in N days").

The front notes each Recommend's (surface, user) in memory (`TrafficCounter.note`: a set add) and
flushes them about once a second into a HyperLogLog per surface and UTC day (`PFADD`: 12 KB at most
per key, ~0.8% error; keys expire after `TRAFFIC_TTL_SECONDS`). The buffer holds at most
`MAX_BUFFERED` users; beyond that (Redis down for a while) notes are dropped and counted, and the
plan undercounts accordingly.

`daily_users` reads yesterday's count for the surfaces (the union: a user of two surfaces counts
once); a service younger than a day extrapolates today's count from the hours elapsed.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

import redis.asyncio as aioredis

from rewardloop.state.keys import surface_traffic_key

TRAFFIC_TTL_SECONDS = 3 * 86_400
MAX_BUFFERED = 100_000
MIN_HOURS = 1.0


def _day(at: datetime.datetime) -> str:
    return at.strftime("%Y%m%d")


class TrafficCounter:
    def __init__(self) -> None:
        self._pending: dict[str, set[str]] = {}
        self._size = 0
        self.dropped = 0

    def note(self, surface: str, pseudonym: str) -> None:
        users = self._pending.setdefault(surface, set())
        if pseudonym in users:
            return
        if self._size >= MAX_BUFFERED:
            self.dropped += 1
            return
        users.add(pseudonym)
        self._size += 1

    @property
    def buffered(self) -> int:
        return self._size

    async def flush(self, redis: aioredis.Redis, now: datetime.datetime | None = None) -> None:
        """Adds the buffered users to today's counts; on a Redis error they stay buffered."""
        if not self._size:
            return
        day = _day(now or datetime.datetime.now(datetime.UTC))
        pipe = redis.pipeline(transaction=False)
        for surface, users in self._pending.items():
            if users:
                key = surface_traffic_key(surface, day)
                pipe.pfadd(key, *users)
                pipe.expire(key, TRAFFIC_TTL_SECONDS)
        await pipe.execute()
        self._pending, self._size = {}, 0


async def daily_users(redis: aioredis.Redis, surfaces: Iterable[str], now: datetime.datetime | None = None) -> float:
    """Distinct users of ``surfaces`` a day: yesterday's, else today's so far scaled to a day."""
    now = now or datetime.datetime.now(datetime.UTC)
    surfaces = list(surfaces)
    if not surfaces:
        return 0.0
    yesterday = [surface_traffic_key(s, _day(now - datetime.timedelta(days=1))) for s in surfaces]
    if await redis.exists(*yesterday):
        return float(await redis.pfcount(*yesterday))
    today = [surface_traffic_key(s, _day(now)) for s in surfaces]
    hours = max(MIN_HOURS, now.hour + now.minute / 60)
    return float(await redis.pfcount(*today)) * 24 / hours
