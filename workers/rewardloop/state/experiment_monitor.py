"""The experiment monitor's durable part: its state per experiment, the timeline of recorded looks,
and the lease that lets one front's monitor act at a time.

- The state (`MonitorState`, JSON) is one string per experiment, rewritten at every look.
- The timeline is a stream per experiment capped at `TIMELINE_ENTRIES` (the monitor records at
  most `learning/experiments/monitor.py:TIMELINE_POINTS` over the planned duration; the cap bounds
  an experiment that overruns it): each entry the users and sums at that look.
- The lease: `SET NX PX`; its holder renews it each look, anyone takes it once it lapses (a front
  that died). Two monitors acting at once would do no harm (every change is a versioned
  compare-and-set) but double the work.

All three go when the experiment is deleted (`state/experiments.py`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis

from rewardloop.learning.experiments.monitor import MonitorState
from rewardloop.state.keys import experiment_monitor_key, experiment_monitor_lease_key, experiment_timeline_key

TIMELINE_ENTRIES = 500

# KEYS[1]: the lease. ARGV: owner, ttl ms. 1 if the caller holds the lease after the call.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

Point = tuple[int, dict[str, int], dict[str, dict[str, tuple[float, float]]]]


class MonitorStore:
    def __init__(self, redis: aioredis.Redis):
        self.redis = redis
        self._lease = redis.register_script(_LEASE)

    async def hold_lease(self, owner: str, ttl_ms: int) -> bool:
        return bool(await self._lease(keys=[experiment_monitor_lease_key()], args=[owner, ttl_ms]))

    async def release_lease(self, owner: str) -> None:
        key = experiment_monitor_lease_key()
        if (await self.redis.get(key)) == owner.encode():
            await self.redis.delete(key)

    async def load(self, name: str) -> MonitorState:
        raw = await self.redis.get(experiment_monitor_key(name))
        return MonitorState.from_dict(json.loads(raw)) if raw else MonitorState()

    async def save(self, name: str, state: MonitorState, point: Point | None = None) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(experiment_monitor_key(name), json.dumps(state.to_dict(), separators=(",", ":")))
        if point is not None:
            at_ms, users, sums = point
            entry = {
                "at_ms": at_ms,
                "users": users,
                "sums": {v: {m: list(s) for m, s in ms.items()} for v, ms in sums.items()},
            }
            pipe.xadd(
                experiment_timeline_key(name),
                {"point": json.dumps(entry, separators=(",", ":"))},
                maxlen=TIMELINE_ENTRIES,
                approximate=True,
            )
        await pipe.execute()

    async def timeline(self, name: str) -> list[Point]:
        """The recorded looks, oldest first."""
        entries: Any = await self.redis.xrange(experiment_timeline_key(name))
        return [_point(json.loads(fields[b"point"])) for _, fields in entries]


def _point(raw: Mapping[str, Any]) -> Point:
    sums = {v: {m: (float(s[0]), float(s[1])) for m, s in ms.items()} for v, ms in raw["sums"].items()}
    return int(raw["at_ms"]), {v: int(n) for v, n in raw["users"].items()}, sums
