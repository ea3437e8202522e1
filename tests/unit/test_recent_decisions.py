"""The recent-decisions cache is bounded in bytes and in time (workers/decisions.py)."""

from __future__ import annotations

from rewardloop.state.records import DecisionRecord
from rewardloop.state.store import Store
from rewardloop.workers.decisions import DECISION_BYTES, RecentDecisions


def _decision(k: int, at_ms: int) -> DecisionRecord:
    return DecisionRecord("p", f"d{k}", "s", ("a",), (1.0,), "ucb1", "v", at_ms)


async def test_decisions_older_than_the_horizon_or_beyond_the_budget_leave_memory() -> None:
    store = Store("redis://127.0.0.1:1")  # never reached: every lookup below is in memory
    try:
        recent = RecentDecisions(store, budget=100 * DECISION_BYTES, horizon_ms=1_000)
        for k in range(50):  # one every 100 ms: ~10 within the horizon
            recent.remember(_decision(k, k * 100))
        assert len(recent) == 11 and recent.bytes == 11 * DECISION_BYTES
        found = await recent.find([("p", f"d{k}") for k in range(39, 50)])
        assert sorted(d.decision_id for d in found.values()) == sorted(f"d{k}" for k in range(39, 50))
        # Within the horizon, the budget bounds it.
        small = RecentDecisions(store, budget=5 * DECISION_BYTES, horizon_ms=10_000)
        for k in range(50):
            small.remember(_decision(k, k * 100))
        assert len(small) == 5
    finally:
        await store.close()
