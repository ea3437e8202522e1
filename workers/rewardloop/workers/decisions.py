"""The decisions feedback joins to: recent ones from memory, the rest from Redis's join index."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from rewardloop.state.records import DecisionRecord
from rewardloop.state.store import Store

# What one remembered decision takes in memory (measured: a record of 10 items, its dict slot).
DECISION_BYTES = 1_200
# Decisions are kept this long past the longest reward window: the window's close (windows.py, a
# moment after it ends) then finds its decision here too, not in Redis.
CLOSE_SLACK_MS = 10_000


class RecentDecisions:
    """Finds a user's decisions by id, the recent ones without a Redis round trip: up to ``budget``
    bytes of them, made within ``horizon_ms`` (the longest reward window: feedback later than that
    is rare, and the join index has it) and ``CLOSE_SLACK_MS`` of the newest."""

    def __init__(self, store: Store, budget: int, horizon_ms: int):
        self._store = store
        self._recent: OrderedDict[str, DecisionRecord] = OrderedDict()
        self.capacity = max(budget // DECISION_BYTES, 1)
        self._horizon_ms = horizon_ms + CLOSE_SLACK_MS

    def __len__(self) -> int:
        return len(self._recent)

    @property
    def bytes(self) -> int:
        return len(self._recent) * DECISION_BYTES

    def remember(self, decision: DecisionRecord) -> None:
        self._recent[decision.decision_id] = decision
        if len(self._recent) > self.capacity:
            self._recent.popitem(last=False)
        oldest = decision.decided_at_ms - self._horizon_ms
        while self._recent and next(iter(self._recent.values())).decided_at_ms < oldest:
            self._recent.popitem(last=False)

    async def find(self, lookups: Sequence[tuple[str, str]]) -> dict[tuple[str, str], DecisionRecord]:
        """The known decisions among (pseudonym, decision_id) pairs: recent ones from memory, the rest
        from Redis. A pair that names another user's decision is not found."""
        known: dict[tuple[str, str], DecisionRecord] = {}
        missing = []
        for pseudonym, decision_id in lookups:
            recent = self._recent.get(decision_id)
            if recent is not None and recent.pseudonym == pseudonym:
                known[(pseudonym, decision_id)] = recent
            else:
                missing.append((pseudonym, decision_id))
        if missing:
            for lookup, stored in zip(missing, await self._store.find_decisions(missing), strict=True):
                if stored is not None:
                    known[lookup] = stored
        return known
