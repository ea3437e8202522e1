"""Distinct users per surface and day, for planning experiments ("at current traffic this experiment
detects the MDE in N days").

The front notes each Recommend's (surface, user) in memory (`TrafficCounter.note`: a set add) and
flushes them about once a second into a HyperLogLog per surface and UTC day (`PFADD`: 12 KB at most
per key, ~0.8% error; keys expire after `TRAFFIC_TTL_SECONDS`). The buffer holds at most
`MAX_BUFFERED` users; beyond that (Redis down for a while) notes are dropped and counted, and the
plan undercounts accordingly.

`daily_users` reads yesterday's count for the surfaces (the union: a user of two surfaces counts
once). Each day notes when counting began (`traffic_since_key`: the earliest start among the fronts
that counted that day, midnight for a front already running), so a day the service saw only part of
is scaled to 24 hours from the hours it covered, and of yesterday and today the one covered longer is
read: a service started at 23:50 does not plan on ten minutes of users at 00:05. A day counted
before starts were noted is read as a whole day.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

import redis.asyncio as aioredis

from rewardloop.state.keys import surface_traffic_key, traffic_since_key

TRAFFIC_TTL_SECONDS = 3 * 86_400
MAX_BUFFERED = 100_000
MIN_HOURS = 1.0


def _day(at: datetime.datetime) -> str:
    return at.strftime("%Y%m%d")


def _utc(at: datetime.datetime | None) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) if at is None else at.astimezone(datetime.UTC)


def _midnight(at: datetime.datetime) -> datetime.datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


class TrafficCounter:
    def __init__(self, started: datetime.datetime | None = None) -> None:
        """``started``: when this process began counting (default: now)."""
        self.started = _utc(started)
        self._pending: dict[str, set[str]] = {}
        self._size = 0
        self.dropped = 0
        self._noted: str | None = None  # the day whose start this counter has noted

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
        """Adds the buffered users to today's counts, and notes when today's counting began (once a
        day); on a Redis error they stay buffered and the start unnoted."""
        now = _utc(now)
        day = _day(now)
        pipe = redis.pipeline(transaction=False)
        if self._noted != day:  # the earliest start of the day's fronts: ZADD LT keeps the least
            since = traffic_since_key(day)
            pipe.zadd(since, {"start": max(_midnight(now), self.started).timestamp()}, lt=True)
            pipe.expire(since, TRAFFIC_TTL_SECONDS)
        for surface, users in self._pending.items():
            if users:
                key = surface_traffic_key(surface, day)
                pipe.pfadd(key, *users)
                pipe.expire(key, TRAFFIC_TTL_SECONDS)
        if len(pipe):
            await pipe.execute()
        self._noted = day
        self._pending, self._size = {}, 0


async def daily_users(redis: aioredis.Redis, surfaces: Iterable[str], now: datetime.datetime | None = None) -> float:
    """Distinct users of ``surfaces`` a day: of yesterday's and today's counts, the one whose day the
    service covered longer, scaled to 24 hours from the hours it covered (at least `MIN_HOURS`)."""
    now = _utc(now)
    surfaces = list(surfaces)
    if not surfaces:
        return 0.0
    midnight = _midnight(now)
    best_hours, best_keys = -1.0, []
    for start, end in ((midnight - datetime.timedelta(days=1), midnight), (midnight, now)):
        keys = [surface_traffic_key(s, _day(start)) for s in surfaces]
        began = await redis.zscore(traffic_since_key(_day(start)), "start")
        if began is not None:
            since = max(start, datetime.datetime.fromtimestamp(began, datetime.UTC))
        elif await redis.exists(*keys):  # counted before starts were noted: taken as whole
            since = start
        else:  # nothing counted that day
            continue
        hours = (end - since).total_seconds() / 3600
        if hours > best_hours:
            best_hours, best_keys = hours, keys
    if not best_keys:
        return 0.0
    return float(await redis.pfcount(*best_keys)) * 24 / max(MIN_HOURS, best_hours)
