"""Distinct users per surface and day, for planning experiments ("at current traffic this experiment
detects the MDE in N days").

The front notes each Recommend's (surface, user) in memory (`TrafficCounter.note`: a set add) and
flushes them about once a second into a HyperLogLog per surface and UTC day (`PFADD`: 12 KB at most
per key, ~0.8% error; keys expire after `TRAFFIC_TTL_SECONDS`). The buffer holds at most
`MAX_BUFFERED` users; beyond that (Redis down for a while) notes are dropped and counted, and the
plan undercounts accordingly.

`daily_users` reads yesterday's count for the surfaces (the union: a user of two surfaces counts
once). Each day's key notes when its count began (`surface_traffic_since_key`), so a day the service
saw only part of is scaled to 24 hours from the hours it covered, and of yesterday and today the one
covered longer is read: a service started at 23:50 does not plan on ten minutes of users at 00:05.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

import redis.asyncio as aioredis

from rewardloop.state.keys import surface_traffic_key, surface_traffic_since_key

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
        now = now or datetime.datetime.now(datetime.UTC)
        day = _day(now)
        pipe = redis.pipeline(transaction=False)
        for surface, users in self._pending.items():
            if users:
                key = surface_traffic_key(surface, day)
                pipe.pfadd(key, *users)
                pipe.expire(key, TRAFFIC_TTL_SECONDS)
                pipe.set(surface_traffic_since_key(surface, day), int(now.timestamp()), nx=True, ex=TRAFFIC_TTL_SECONDS)
        await pipe.execute()
        self._pending, self._size = {}, 0


async def daily_users(redis: aioredis.Redis, surfaces: Iterable[str], now: datetime.datetime | None = None) -> float:
    """Distinct users of ``surfaces`` a day: of yesterday's and today's counts, the one whose day the
    service covered longer, scaled to 24 hours from the hours it covered (at least `MIN_HOURS`)."""
    now = now or datetime.datetime.now(datetime.UTC)
    surfaces = list(surfaces)
    if not surfaces:
        return 0.0
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    best_hours, best_keys = -1.0, []
    for start, end in ((midnight - datetime.timedelta(days=1), midnight), (midnight, now)):
        keys = [surface_traffic_key(s, _day(start)) for s in surfaces]
        began = [int(b) for b in await redis.mget([surface_traffic_since_key(s, _day(start)) for s in surfaces]) if b]
        if began:
            since = max(start, min(datetime.datetime.fromtimestamp(b, datetime.UTC) for b in began))
        elif await redis.exists(*keys):  # counted before counts noted their start: taken as whole
            since = start
        else:  # no surface counted a user that day
            continue
        hours = (end - since).total_seconds() / 3600
        if hours > best_hours:
            best_hours, best_keys = hours, keys
    if not best_keys:
        return 0.0
    return float(await redis.pfcount(*best_keys)) * 24 / max(MIN_HOURS, best_hours)
