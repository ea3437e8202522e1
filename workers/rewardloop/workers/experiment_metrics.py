"""A shard's part in experiment metrics: after its users' feedback is durable and learned, attribute it
to the experiments they were exposed to (`learning/experiments/attribution.py`, stored by
`state/experiment_metrics.py`).

The shard owns its users, so it is the one writer of their metric values: a read of their
experiment hashes, the pure update, one transaction, which also moves the user's mark
(``ATTRIBUTED_FIELD``: the log id of the last event attributed). The caller's ack follows it. A
shard that dies after logging an event and before attributing it fails the call; the caller's retry
finds the event logged (a duplicate) and, as its id is past the user's mark, attributes it then,
once. Should Redis refuse the attribution itself, the call fails the same way (``AttributionFailed``,
``UNAVAILABLE`` to the caller) and the retry attributes the events; ``failed`` counts them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rewardloop.learning.experiments.attribution import (
    ATTRIBUTED_FIELD,
    VALUE_PREFIX,
    Update,
    attribute,
    experiment_of,
    parse_exposures,
)
from rewardloop.learning.experiments.lifecycle import DRAFT
from rewardloop.state.covariates import event_of
from rewardloop.state.experiment_metrics import read_users, record_updates
from rewardloop.state.experiments import ExperimentCatalog
from rewardloop.state.records import FeedbackRecord, stream_id_key

log = logging.getLogger(__name__)

EMPTY_RECHECK_SECONDS = 0.1


class AttributionFailed(RedisError):
    """The events were logged and learned, their experiment attribution refused: the call fails so
    that the caller retries, and the retry (a duplicate of each) attributes them."""


class ExperimentAttribution:
    def __init__(self, redis_url: str, redis: aioredis.Redis):
        self.catalog = ExperimentCatalog(redis_url)
        self._redis = redis
        self.attributed = 0
        self.failed = 0
        self._checked = 0.0

    async def refresh(self) -> None:
        await self.catalog.refresh(self._redis)

    def _behind(self, name: str) -> bool:
        """Whether a user's exposure to ``name`` shows this shard's catalogue behind the front's: the
        experiment is unknown here, or known only as a draft (the refresh came between its creation
        and its start). Its events would otherwise be skipped and the user's mark moved past them."""
        experiment = self.catalog.experiments.get(name)
        return experiment is None or experiment.status == DRAFT

    async def observe(self, records: Sequence[FeedbackRecord]) -> None:
        """Attribute learned caller events (not window closes or flagged ones; logged: with their
        ``stream_id``) past their user's mark: the newly logged, and retries of events whose
        attribution a dead shard did not make."""
        if not records:
            return
        try:
            if not self.catalog.experiments:
                # The first experiment may have started since the last refresh: one GET, at most
                # every `EMPTY_RECHECK_SECONDS` (a service without experiments pays next to nothing).
                now = time.monotonic()
                if now - self._checked >= EMPTY_RECHECK_SECONDS:
                    self._checked = now
                    await self.refresh()
                if not self.catalog.experiments:
                    return
            users = sorted({r.pseudonym for r in records})
            hashes = await read_users(self._redis, users)
            exposed = {p: parse_exposures(hashes[p]) for p in users}
            if any(self._behind(name) for e in exposed.values() for name in e):
                # Exposed by a front that saw the experiment start before this shard's next refresh.
                await self.refresh()
            specs = {n: e.spec for n, e in self.catalog.experiments.items() if e.holds_buckets}
            known = self.catalog.experiments
            # Fields of deleted experiments go, or every event of these users would refresh again.
            stale = {p: [f for f in hashes[p] if (e := experiment_of(f)) is not None and e not in known] for p in users}
            updates: dict[str, Update] = {}
            marks: dict[str, str] = {}
            for pseudonym in users:
                # An exposure from before the experiment's creation is a deleted namesake's (the
                # front replaces it at the user's next assignment).
                exposures = {n: e for n, e in exposed[pseudonym].items() if n in known and e[1] >= known[n].created_ms}
                if not exposures:
                    continue
                values = {k: float(v) for k, v in hashes[pseudonym].items() if k.startswith(VALUE_PREFIX)}
                mark = stream_id_key(hashes[pseudonym].get(ATTRIBUTED_FIELD, "0-0"))
                mine = [r for r in records if r.pseudonym == pseudonym and stream_id_key(r.stream_id) > mark]
                if not mine:
                    continue
                updates[pseudonym] = attribute(specs, exposures, values, [event_of(r) for r in mine])
                marks[pseudonym] = max((r.stream_id for r in mine), key=stream_id_key)
            cuped = {n: s.primary_metric.name for n, s in specs.items() if s.cuped_days > 0}
            await record_updates(self._redis, updates, stale, cuped, marks)
            self.attributed += len(records)
        except (RedisError, OSError) as exc:
            self.failed += len(records)
            log.warning("experiment metrics of %d events not attributed (the call fails, for a retry): %s",
                        len(records), exc)  # fmt: skip
            # Not the storage's own words: an OOM here must not read as "nothing was applied".
            raise AttributionFailed(f"experiment attribution refused ({type(exc).__name__})") from exc
