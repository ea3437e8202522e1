"""bench/capacity.py's simulation of what Redis keeps, against the closed form where that holds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from capacity import Hash, Simulation

from rewardloop.state.retention import PRUNE_FLOOR
from rewardloop.workers.config import ServiceConfig

USERS, PAIRS = 100, 5.0  # a decision every 20 s per user


def config(horizon_s: int) -> ServiceConfig:
    return ServiceConfig.from_dict(
        {
            "service": {
                "retention": {"logs_seconds": horizon_s, "dedup_seconds": horizon_s},
                "quality": {"max_age_ms": horizon_s * 1000},
            },
            "surfaces": {"s": {"algorithm": "thompson", "items": ["a", "b"], "reward": {"window_seconds": 60}}},
        }
    )


def test_at_long_horizons_each_family_is_its_rate_times_its_horizon() -> None:
    horizon = 3600
    entries = Simulation(config(horizon), USERS, PAIRS, slate=2, seed=3).run(minutes=150)
    per_user = {k: v / USERS for k, v in entries.items()}
    live = PAIRS / USERS * horizon  # 180 decisions per user within the horizon
    # Logs: what retention keeps, plus what waits for the user's next snapshot (a few entries).
    assert live <= per_user["decision log"] <= 1.15 * live
    assert live <= per_user["feedback log (Record)"] <= 1.15 * live
    # Hashes pruned once doubled: between their live entries and twice them, 1.5x on average.
    assert 1.2 * live <= per_user["event ids"] / 2 <= 1.8 * live  # a Record and a window close per decision
    join_live = PAIRS / USERS * (horizon + 60)
    assert 1.2 * join_live <= per_user["join index"] <= 1.8 * join_live


def test_at_short_horizons_the_per_user_floors_dominate() -> None:
    entries = Simulation(config(60), USERS, PAIRS, slate=2, seed=3).run(minutes=20)
    live = PAIRS / USERS * 60  # 3 decisions per user within the horizon
    assert entries["event ids"] / USERS > 3 * (2 * live)  # the hash is pruned only from 32 entries on
    assert entries["decision log"] / USERS > 1.5 * live  # trimmed only at the next snapshot


@pytest.mark.parametrize("writes", [10, 31, 32, 100, 1000])
def test_a_hash_holds_at_most_twice_its_live_entries_and_the_floor(writes: int) -> None:
    h = Hash(horizon=5.0)
    for t in range(writes):
        h.add(float(t))
    live = 6  # times t-5 .. t
    assert len(h.times) + 1 <= max(2 * (live + 1), PRUNE_FLOOR)
    assert len(h.times) >= min(writes, live)
