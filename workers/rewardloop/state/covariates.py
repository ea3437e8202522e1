"""CUPED's covariates, computed after first exposures: each newly exposed user's value of the
primary metric over the experiment's ``cuped_days`` before the exposure, from the user's feedback
log (`learning/experiments/attribution.py:pre_period_value`), set once in the user's experiment
hash and added to the variant's Σx, Σx², Σxy (`experiment_metrics.Exposures.set_covariate`).

It runs in the background of the front that recorded the exposure, off the request path: a queue
of at most `MAX_PENDING` exposures; beyond it (Redis slow or down) exposures go without a
covariate and are counted in ``dropped``. A user without one counts as x = 0, which keeps the
CUPED estimate unbiased (x stays a pre-exposure quantity, equally missing in every variant); it
only reduces less variance.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rewardloop.learning.experiments.attribution import DAY_MS, Event, pre_period_value
from rewardloop.learning.experiments.spec import ExperimentSpec
from rewardloop.learning.rewards.signals import Signal
from rewardloop.state import loops
from rewardloop.state.experiment_metrics import Exposures
from rewardloop.state.keys import UserKeys
from rewardloop.state.records import FeedbackRecord

log = logging.getLogger(__name__)

MAX_PENDING = 10_000
PAGE = 1_000
MAX_EVENTS = 10_000  # per user and pre-period: enough for any human; a bot's history is cut here


def event_of(record: FeedbackRecord) -> Event:
    return Event(Signal(record.signal).key, record.value, record.reward, record.surface, record.occurred_at_ms)


def counts(record: FeedbackRecord) -> bool:
    """Whether a logged record is one of the caller's events that metrics count (not a window's
    close, not flagged by the ingest)."""
    return not record.window_close and not record.flag


class Covariates:
    def __init__(self, redis: aioredis.Redis):
        self._redis = redis
        self._exposures = Exposures(redis)
        self._queue: asyncio.Queue[tuple[str, str, str, ExperimentSpec, int]] = asyncio.Queue(MAX_PENDING)
        self._task: asyncio.Task[None] | None = None
        self.computed = 0
        self.dropped = 0

    def start(self) -> Covariates:
        self._task = loops.start(self._forever())
        return self

    async def stop(self) -> None:
        await loops.stop(self._task)
        self._task = None

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def exposed(self, pseudonym: str, experiment: str, variant: str, spec: ExperimentSpec, at_ms: int) -> None:
        """A first exposure: its covariate is computed in the background (if the spec uses CUPED)."""
        if spec.cuped_days <= 0:
            return
        try:
            self._queue.put_nowait((pseudonym, experiment, variant, spec, at_ms))
        except asyncio.QueueFull:
            self.dropped += 1

    async def drain(self) -> None:
        """Computes everything queued so far (tests; the loop does the same in the background)."""
        while not self._queue.empty():
            await self._compute(*self._queue.get_nowait())

    async def _forever(self) -> None:
        while loops.running():
            job = await self._queue.get()
            try:
                await self._compute(*job)
            except (RedisError, OSError) as exc:
                self.dropped += 1
                log.warning("CUPED covariate not computed: %s", exc)
            except Exception:  # one user's odd log must not end the covariates of everyone after
                self.dropped += 1
                log.exception("CUPED covariate of an exposure to %s failed", job[1])

    async def _compute(self, pseudonym: str, experiment: str, variant: str, spec: ExperimentSpec, at_ms: int) -> None:
        start = int(at_ms - spec.cuped_days * DAY_MS)
        events = await self._events(pseudonym, start, at_ms)
        x = pre_period_value(spec.primary_metric, events, at_ms, spec.cuped_days)
        await self._exposures.set_covariate(pseudonym, experiment, variant, spec.primary_metric.name, x)
        self.computed += 1

    async def _events(self, pseudonym: str, start_ms: int, end_ms: int) -> list[Event]:
        """The user's counted events received in [start, end] (the log is ordered by receipt; an
        event received after the exposure cannot have occurred before it by much, and
        `pre_period_value` filters by occurrence)."""
        key = UserKeys(pseudonym).feedback_log
        events: list[Event] = []
        low = f"{max(0, start_ms)}-0"
        while len(events) < MAX_EVENTS:
            page: Any = await self._redis.xrange(key, min=low, max=f"{end_ms}-{2**63 - 1}", count=PAGE)
            for raw_id, fields in page:
                try:
                    record = FeedbackRecord.from_fields(pseudonym, raw_id.decode(), fields)
                    if counts(record):
                        events.append(event_of(record))
                except (KeyError, ValueError) as exc:  # an entry this version cannot read: not counted
                    log.warning("feedback log entry %s not read for a covariate: %r", raw_id, exc)
            if len(page) < PAGE:
                break
            low = "(" + page[-1][0].decode()
        return events[:MAX_EVENTS]
