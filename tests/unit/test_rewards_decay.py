"""Time decay by event-time weights: the weight function, rebase, order independence, snapshot + replay."""

from __future__ import annotations

import math
import random
import struct

import numpy as np
import pytest

from rewardloop.learning.rewards import (
    REBASE_EXPONENT,
    decay_weight,
    needs_rebase,
    present_value,
    rebase,
    rebase_factor,
)

DAY_S = 86_400.0
DAY_MS = 86_400_000


@pytest.mark.parametrize(
    ("occurred", "half_life", "epoch", "weight"),
    [
        (5 * DAY_MS, None, 0, 1.0),
        (0, DAY_S, 0, 1.0),
        (DAY_MS, DAY_S, 0, 2.0),
        (3 * DAY_MS, DAY_S, 0, 8.0),
        (DAY_MS // 2, DAY_S, 0, math.sqrt(2.0)),
        (0, DAY_S, DAY_MS, 0.5),
        (7 * DAY_MS, 7 * DAY_S, 0, 2.0),
        (10**12 + 3_600_000, 3_600.0, 10**12, 2.0),
    ],
)
def test_decay_weight(occurred: int, half_life: float | None, epoch: int, weight: float) -> None:
    assert decay_weight(occurred, half_life, epoch) == pytest.approx(weight, rel=1e-15)


def test_rebase_rule() -> None:
    limit = int(REBASE_EXPONENT * 1_000)  # half-life 1 s: exponent = seconds
    assert not needs_rebase(limit, 1.0, 0) and needs_rebase(limit + 1, 1.0, 0)
    assert not needs_rebase(10**15, None, 0)
    assert rebase_factor(0, 3_000, 1.0) == 0.125 and rebase_factor(0, 3_000, None) == 1.0
    stats = {"count": np.array([8.0, 1.0]), "sum": np.array([4.0, 0.0])}
    moved = rebase(stats, 0, 3_000, 1.0)
    assert stats["count"].tolist() == [8.0, 1.0]  # inputs untouched
    assert moved["count"].tolist() == [1.0, 0.125] and moved["sum"].tolist() == [0.5, 0.0]
    for t in (0, 1_234, 3_000, 70_000):  # same relative weights after the move
        assert decay_weight(t, 1.0, 3_000) == pytest.approx(decay_weight(t, 1.0, 0) * 0.125, rel=1e-15)


class WeightedStats:
    """Stand-in for a policy's sufficient statistics under decay: weighted count and reward sum per arm."""

    def __init__(self, n_arms: int, half_life_s: float | None, epoch_ms: int = 0) -> None:
        self.half_life_s = half_life_s
        self.epoch_ms = epoch_ms
        self.count = np.zeros(n_arms)
        self.sum = np.zeros(n_arms)
        self.rebases = 0

    def update(self, arm: int, at_ms: int, reward: float) -> None:
        if needs_rebase(at_ms, self.half_life_s, self.epoch_ms):
            moved = rebase({"count": self.count, "sum": self.sum}, self.epoch_ms, at_ms, self.half_life_s)
            self.count, self.sum, self.epoch_ms = moved["count"], moved["sum"], at_ms
            self.rebases += 1
        w = decay_weight(at_ms, self.half_life_s, self.epoch_ms)
        self.count[arm] += w
        self.sum[arm] += w * reward

    def present(self, now_ms: int) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.array([present_value(c, now_ms, self.half_life_s, self.epoch_ms) for c in self.count]),
            np.array([present_value(s, now_ms, self.half_life_s, self.epoch_ms) for s in self.sum]),
        )

    def snapshot(self) -> bytes:
        return struct.pack("<qq", self.epoch_ms, len(self.count)) + self.count.tobytes() + self.sum.tobytes()

    @classmethod
    def restore(cls, blob: bytes, half_life_s: float | None) -> WeightedStats:
        epoch_ms, n = struct.unpack_from("<qq", blob)
        stats = cls(n, half_life_s, epoch_ms)
        arrays = np.frombuffer(blob, dtype=np.float64, offset=16)
        stats.count, stats.sum = arrays[:n].copy(), arrays[n:].copy()
        return stats


N_ARMS = 5
HALF_LIFE_S = 2.0
NOW_MS = 300_000


def _log(seed: int, n: int = 400) -> list[tuple[int, int, float]]:
    """(arm, decision time, reward) updates over 300 s, in a mostly-ordered arrival with late stragglers."""
    rng = random.Random(seed)
    updates = sorted((rng.randrange(N_ARMS), rng.randrange(NOW_MS), rng.random()) for _ in range(n))
    updates.sort(key=lambda u: u[1] + (rng.randrange(60_000) if rng.random() < 0.1 else 0))
    return updates


def _reference(updates: list[tuple[int, int, float]], half_life_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Classic exponential decay, written directly: each event counts 2 ** -((now - t) / half_life)."""
    count, total = np.zeros(N_ARMS), np.zeros(N_ARMS)
    for arm, at, reward in updates:
        w = 2.0 ** (-(NOW_MS - at) / (half_life_s * 1000))
        count[arm] += w
        total[arm] += w * reward
    return count, total


def test_weighted_statistics_are_the_decayed_ones() -> None:
    updates = _log(1)
    stats = WeightedStats(N_ARMS, HALF_LIFE_S)
    for update in updates:
        stats.update(*update)
    assert stats.rebases >= 2  # 300 s at a 2 s half-life: exponent 150, over the rebase limit twice
    count, total = stats.present(NOW_MS)
    ref_count, ref_total = _reference(updates, HALF_LIFE_S)
    np.testing.assert_allclose(count, ref_count, rtol=1e-12)
    np.testing.assert_allclose(total, ref_total, rtol=1e-12)


@pytest.mark.parametrize("half_life_s", [HALF_LIFE_S, 30.0, None])
def test_any_order_gives_the_same_statistics(half_life_s: float | None) -> None:
    updates = _log(2)
    straight = WeightedStats(N_ARMS, half_life_s)
    for update in sorted(updates, key=lambda u: u[1]):
        straight.update(*update)
    rng = random.Random(3)
    for _ in range(20):
        shuffled = updates[:]
        rng.shuffle(shuffled)
        stats = WeightedStats(N_ARMS, half_life_s)
        for update in shuffled:
            stats.update(*update)
        # Only the rounding of the float additions depends on the order.
        for got, want in zip(stats.present(NOW_MS), straight.present(NOW_MS), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12)
        if half_life_s is None:  # unit weights: integer counts, exact in any order
            assert stats.count.tolist() == straight.count.tolist()


@pytest.mark.parametrize("half_life_s", [HALF_LIFE_S, None])
def test_snapshot_and_replay_equal_a_straight_run_bit_for_bit(half_life_s: float | None) -> None:
    updates = _log(4)
    straight = WeightedStats(N_ARMS, half_life_s)
    for update in updates:
        straight.update(*update)
    for cut in (0, 1, 57, 200, 333, len(updates)):
        before = WeightedStats(N_ARMS, half_life_s)
        for update in updates[:cut]:
            before.update(*update)
        restarted = WeightedStats.restore(before.snapshot(), half_life_s)  # e.g. a shard actor killed here
        for update in updates[cut:]:
            restarted.update(*update)
        assert restarted.snapshot() == straight.snapshot(), cut


def test_a_very_old_late_event_fades_out_instead_of_failing() -> None:
    stats = WeightedStats(1, 1.0, epoch_ms=5_000_000)  # an epoch ~5000 half-lives after the event
    stats.update(0, 0, 1.0)
    assert stats.count.tolist() == [0.0]
