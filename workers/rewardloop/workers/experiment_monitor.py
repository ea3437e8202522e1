"""The experiment monitor's loop: every `MONITOR_SECONDS`, one look at each running experiment
(`learning/experiments/monitor.py`), its state and timeline saved (`state/experiment_monitor.py`),
and its action taken through the experiment store: a stop on a guardrail regression or
sample-ratio mismatch, the ramp's next step once its gates pass.

It runs in every front; a lease in Redis lets one act at a time. Each action is a versioned change
made against the version the look read (a change by an operator in between wins, and the next look
reconsiders), recorded in the experiment's history with ``changed_by: monitor`` and its reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections import Counter

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rewardloop.learning.experiments import lifecycle
from rewardloop.learning.experiments.lifecycle import MONITOR, Experiment, LifecycleError, layer_free
from rewardloop.learning.experiments.monitor import STOP, Outcome, look
from rewardloop.state import loops
from rewardloop.state.experiment_metrics import read_stats
from rewardloop.state.experiment_monitor import MonitorStore
from rewardloop.state.experiments import Conflict, ExperimentStore, now_ms

log = logging.getLogger(__name__)

MONITOR_SECONDS = 10.0
MIN_LEASE_MS = 5_000


class ExperimentMonitor:
    def __init__(self, redis_url: str, interval_seconds: float = MONITOR_SECONDS):
        self.redis_url = redis_url
        self.interval = interval_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.actions: Counter[str] = Counter()  # stop / ramp / conflict / failed
        self.looks = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> ExperimentMonitor:
        self._task = loops.start(self._forever())
        return self

    async def stop(self) -> None:
        await loops.stop(self._task)
        self._task = None
        try:
            async with aioredis.Redis.from_url(self.redis_url) as redis:
                await MonitorStore(redis).release_lease(self.owner)
        except (RedisError, OSError):
            pass  # it lapses by itself

    async def _forever(self) -> None:
        async with aioredis.Redis.from_url(self.redis_url) as redis:
            while loops.running():
                try:
                    await self.look_once(redis)
                except (RedisError, OSError) as exc:
                    self.actions["failed"] += 1
                    log.warning("experiment monitor: look failed: %s", exc)
                await asyncio.sleep(self.interval)

    async def look_once(self, redis: aioredis.Redis, at_ms: int | None = None) -> list[tuple[str, Outcome]]:
        """One look at every running experiment (if this monitor holds the lease); what it found."""
        monitors = MonitorStore(redis)
        if not await monitors.hold_lease(self.owner, max(MIN_LEASE_MS, int(3_000 * self.interval))):
            return []
        store = ExperimentStore(redis)
        seen = []
        for name, experiment in (await store.load()).items():
            if experiment.status != lifecycle.RUNNING:
                continue
            stats = await read_stats(redis, name)
            users = {v: s.n for v, s in stats.items()}
            sums = {v: s.metrics for v, s in stats.items()}
            now = at_ms if at_ms is not None else now_ms()
            covariates = {v: s.covariates for v, s in stats.items()}
            outcome = look(experiment, users, sums, await monitors.load(name), now, covariates)
            await monitors.save(name, outcome.state, (now, users, sums) if outcome.point else None)
            if outcome.action:
                await self._act(store, experiment, outcome, now)
            seen.append((name, outcome))
        self.looks += 1
        return seen

    async def _act(self, store: ExperimentStore, experiment: Experiment, outcome: Outcome, at_ms: int) -> None:
        def change(experiments: dict[str, Experiment]) -> Experiment:
            current = experiments[experiment.name]
            if outcome.action == STOP:
                return lifecycle.stop(current, at_ms, outcome.reason, winner=current.spec.control, by=MONITOR)
            free = layer_free(experiments, current.spec.layer_key, excluding=current.name)
            return lifecycle.ramp(current, free, at_ms, by=MONITOR)

        try:
            await store.apply(experiment.name, outcome.action, change, expected_version=experiment.version)
        except (Conflict, LifecycleError, KeyError) as exc:
            self.actions["conflict"] += 1
            log.info("experiment monitor: %s of %s not applied: %s", outcome.action, experiment.name, exc)
            return
        self.actions[outcome.action] += 1
        log.warning("experiment monitor: %s %s: %s", outcome.action, experiment.name, outcome.reason)
