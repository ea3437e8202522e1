"""The recent-decisions cache is bounded in bytes and in time (workers/decisions.py)."""

from __future__ import annotations

from rewardloop.state.records import DecisionRecord
from rewardloop.state.store import Store
from rewardloop.workers.decisions import CLOSE_SLACK_MS, DECISION_BYTES, RecentDecisions


def _decision(k: int, at_ms: int) -> DecisionRecord:
    return DecisionRecord("p", f"d{k}", "s", ("a",), (1.0,), "ucb1", "v", at_ms)


async def test_decisions_older_than_the_horizon_or_beyond_the_budget_leave_memory() -> None:
    store = Store("redis://127.0.0.1:1")  # never reached: every lookup below is in memory
    try:
        recent = RecentDecisions(store, budget=100 * DECISION_BYTES, horizon_ms=1_000)
        step_ms = 500
        for k in range(100):  # one every 500 ms: those within the window + the close's slack stay
            recent.remember(_decision(k, k * step_ms))
        kept = range(99 - (1_000 + CLOSE_SLACK_MS) // step_ms, 100)
        assert 0 < len(kept) < 100
        assert len(recent) == len(kept) and recent.bytes == len(kept) * DECISION_BYTES
        found = await recent.find([("p", f"d{k}") for k in kept])
        assert sorted(d.decision_id for d in found.values()) == sorted(f"d{k}" for k in kept)
        # Within the horizon, the budget bounds it.
        small = RecentDecisions(store, budget=5 * DECISION_BYTES, horizon_ms=10_000)
        for k in range(50):
            small.remember(_decision(k, k * 100))
        assert len(small) == 5
    finally:
        await store.close()
