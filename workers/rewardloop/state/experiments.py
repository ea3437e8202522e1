"""The experiments' durable home: one Redis hash of records, a version counter, a history per experiment.

Every change is read-modify-write under WATCH of the hash: allocating buckets needs what the
other experiments of the layer hold, so two operators ramping two experiments of one layer at once
must not both take the same free buckets. The write bumps the version counter and appends the
changed record to the experiment's history (capped at `HISTORY_ENTRIES`) in the same transaction.

`ExperimentCatalog` is the read side kept in every process that assigns: it polls the version
counter (one GET a second) and, when it moved, reloads the records and compiles a new `Assigner`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from rewardloop.learning.experiments.assigner import Assigner
from rewardloop.learning.experiments.lifecycle import STATUSES, Experiment
from rewardloop.state import loops
from rewardloop.state.covariates import Covariates
from rewardloop.state.experiment_metrics import Exposures
from rewardloop.state.keys import (
    experiment_history_key,
    experiment_monitor_key,
    experiment_stats_key,
    experiment_timeline_key,
    experiments_key,
    experiments_version_key,
)
from rewardloop.state.store import waiting_client
from rewardloop.state.traffic import TrafficCounter

log = logging.getLogger(__name__)

# Records bound the hash: a stopped experiment stays (results stay readable) until deleted.
MAX_EXPERIMENTS = 1_000
HISTORY_ENTRIES = 1_000
REFRESH_SECONDS = 1.0
EXPOSED_CACHE = 50_000  # ~250 B each: ~12 MB at most
_WATCH_RETRIES = 20


class Conflict(Exception):
    """The experiment is not at the version the caller expected (the API answers ABORTED)."""


class TooMany(Exception):
    """The catalogue holds `MAX_EXPERIMENTS` records (the API answers RESOURCE_EXHAUSTED)."""


def decode(raw: Mapping[Any, Any]) -> dict[str, Experiment]:
    return {name.decode(): Experiment.from_dict(name.decode(), json.loads(record)) for name, record in raw.items()}


def now_ms() -> int:
    return int(time.time() * 1000)


Change = Callable[[dict[str, Experiment]], Experiment | None]


class ExperimentStore:
    """Changes to the experiments, atomic and audited."""

    def __init__(self, redis: aioredis.Redis):
        self._redis = redis

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    async def load(self) -> dict[str, Experiment]:
        return decode(await self._redis.hgetall(experiments_key()))

    async def get(self, name: str) -> Experiment | None:
        raw = await self._redis.hget(experiments_key(), name)
        return None if raw is None else Experiment.from_dict(name, json.loads(raw))

    async def apply(self, name: str, action: str, change: Change, expected_version: int = 0) -> Experiment | None:
        """Applies ``change`` to the catalogue (it returns the experiment's new record, or None to
        delete it) and records it; retried when another change landed in between."""
        for _ in range(_WATCH_RETRIES):
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(experiments_key())
                    experiments = decode(await pipe.hgetall(experiments_key()))
                    current = experiments.get(name)
                    # A missing experiment is the change's to report (NOT_FOUND), not a conflict.
                    if expected_version and current is not None and current.version != expected_version:
                        raise Conflict(
                            f"expected_version: {expected_version} is not current (it is at version {current.version})"
                        )
                    if current is None and len(experiments) >= MAX_EXPERIMENTS:
                        raise TooMany(f"the service holds {MAX_EXPERIMENTS} experiments; delete stopped ones")
                    changed = change(experiments)
                    pipe.multi()
                    _write(pipe, name, action, changed)
                    await pipe.execute()
                    return changed
                except WatchError:
                    continue
        raise RedisError(f"experiment {name!r}: {_WATCH_RETRIES} concurrent changes in a row; try again")

    async def history(self, name: str, limit: int) -> list[tuple[str, int, Experiment]]:
        """(action, at_ms, the record after it), most recent first."""
        entries: Any = await self._redis.xrevrange(experiment_history_key(name), count=limit)
        return [
            (
                fields[b"action"].decode(),
                int(fields[b"at_ms"]),
                Experiment.from_dict(name, json.loads(fields[b"record"])),
            )
            for _, fields in entries
        ]


def _write(pipe: Any, name: str, action: str, changed: Experiment | None) -> None:
    if changed is None:
        pipe.hdel(experiments_key(), name)
        pipe.delete(
            experiment_history_key(name),
            experiment_stats_key(name),
            experiment_monitor_key(name),
            experiment_timeline_key(name),
        )
    else:
        record = json.dumps(changed.to_dict(), separators=(",", ":"))
        pipe.hset(experiments_key(), name, record)
        pipe.xadd(
            experiment_history_key(name),
            {"action": action, "at_ms": changed.updated_ms, "record": record},
            maxlen=HISTORY_ENTRIES,
            approximate=True,
        )
    pipe.incr(experiments_version_key())


class ExperimentCatalog:
    """The stored experiments as this process assigns them, refreshed within `REFRESH_SECONDS` of a change."""

    def __init__(self, redis_url: str, refresh_seconds: float = REFRESH_SECONDS):
        self._redis_url = redis_url
        self._refresh_seconds = refresh_seconds
        self.experiments: dict[str, Experiment] = {}
        self.assigner = Assigner(())
        self.version = -1
        self._task: asyncio.Task[None] | None = None
        self._redis: aioredis.Redis | None = None
        self._exposures: Exposures | None = None
        self.covariates: Covariates | None = None
        # Exposures recorded lately: (pseudonym, experiment, variant, started_ms), LRU.
        self.exposed: OrderedDict[tuple[str, str, str, int], None] = OrderedDict()
        self._started: dict[str, int] = {}
        self._created: dict[str, int] = {}
        # Distinct users per surface, for planning (the front notes them; flushed with each refresh).
        self.traffic = TrafficCounter()

    async def expose(self, pseudonym: str, assignments: list[tuple[str, str]], now_ms: int) -> int:
        """Records the user's first exposures (`experiment_metrics.Exposures`); how many were first.

        Exposures this process recorded lately are skipped (`EXPOSED_CACHE` entries, least recently
        used first out): a user's repeat calls cost no Redis round trip. An entry is keyed by the
        experiment's start time too, so a deleted and re-created experiment exposes afresh."""
        if self._redis is None:
            raise RedisError("the experiment catalogue is not started")
        if self._exposures is None:
            self._exposures = Exposures(self._redis)
        keys = [(pseudonym, e, v, self._started.get(e, 0)) for e, v in assignments]
        fresh = [(e, v) for (e, v), key in zip(assignments, keys, strict=True) if not self._seen(key)]
        flags = await self._exposures.expose(pseudonym, fresh, now_ms, self._created) if fresh else []
        for (experiment, variant), new in zip(fresh, flags, strict=True):
            found = self.experiments.get(experiment)
            if new and found is not None and self.covariates is not None:
                self.covariates.exposed(pseudonym, experiment, variant, found.spec, now_ms)
        for key in keys:
            self.exposed[key] = None
        while len(self.exposed) > EXPOSED_CACHE:
            self.exposed.popitem(last=False)
        return sum(flags)

    def _seen(self, key: tuple[str, str, str, int]) -> bool:
        if key in self.exposed:
            self.exposed.move_to_end(key)
            return True
        return False

    def counts(self) -> dict[str, int]:
        """Experiments by status (the catalogue is bounded by `MAX_EXPERIMENTS`)."""
        out = dict.fromkeys(STATUSES, 0)
        for experiment in self.experiments.values():
            out[experiment.status] += 1
        return out

    async def exists(self, name: str) -> bool:
        """Whether ``name`` is an experiment; one that is not cached yet is looked up (created a
        moment ago: it exists, but enrols nobody here until the next refresh)."""
        if name in self.experiments:
            return True
        if self._redis is None:
            return False
        return bool(await self._redis.hexists(experiments_key(), name))

    async def refresh(self, redis: aioredis.Redis) -> bool:
        """Reloads if the version moved; True when it did. Redis errors propagate (the loop logs them)."""
        raw = await redis.get(experiments_version_key())
        version = int(raw or 0)
        if version == self.version:
            return False
        experiments = await ExperimentStore(redis).load()
        self.experiments, self.assigner, self.version = experiments, Assigner(experiments.values()), version
        self._started = {name: e.started_ms for name, e in experiments.items()}
        self._created = {name: e.created_ms for name, e in experiments.items()}
        return True

    async def start(self) -> ExperimentCatalog:
        """First load now (a failure raises: the service must not start blind), then refresh in the background."""
        redis = waiting_client(self._redis_url)  # every front request shares it
        try:
            await self.refresh(redis)
        except BaseException:
            await redis.aclose()
            raise
        self._redis = redis
        self.covariates = Covariates(redis).start()
        self._task = loops.start(self._refresh_forever(redis))
        return self

    async def _refresh_forever(self, redis: aioredis.Redis) -> None:
        try:
            while loops.running():
                await asyncio.sleep(self._refresh_seconds)
                try:
                    await self.refresh(redis)
                    await self.traffic.flush(redis)
                except (RedisError, OSError) as exc:
                    # Keep assigning from the last catalogue: assignment must not fail with storage.
                    log.warning("experiment catalogue refresh failed: %s", exc)
        finally:
            self._redis = None
            await redis.aclose()

    async def stop(self) -> None:
        if self.covariates is not None:
            await self.covariates.stop()
        await loops.stop(self._task)
        self._task = None
