"""Acceptance: the same feedback replayed with retries, reordering and a crash + restart ends in the state of an
in-order, exactly-once run.

``Engine`` is a stand-in for what a shard does with feedback, reduced to the reward engine's part:
deduplicate by event_id, assess quality, fuse per decision-item, and learn the first value of each
decision-item plus every later correction into decayed per-arm statistics (weighted by the decision's
time). Fusion states, verdicts and kept (flagged) events must be identical; the learned statistics equal
up to the rounding of float additions done in another order.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from rewardloop.learning.rewards import (
    BurstDetector,
    DecisionWindow,
    Event,
    EventContext,
    FusionState,
    Outcome,
    RewardConfig,
    Signal,
    Verdict,
    assess,
    counts_toward_burst,
    decay_weight,
    needs_rebase,
    rebase,
)

N_ITEMS = 3
START = 1_700_000_000_000
MINUTE = 60_000
DAY = 86_400_000


@dataclass(frozen=True)
class Decision:
    user: str
    decided_at_ms: int


@dataclass(frozen=True)
class Feedback:
    user: str
    decision_id: str
    item: int
    event: Event


class Engine:
    def __init__(self, config: RewardConfig, decisions: dict[str, Decision]) -> None:
        self.config = config
        self.decisions = decisions
        self.verdicts: dict[str, Verdict] = {}  # the idempotency keys: recorded events (accepted or flagged)
        self.fusion: dict[str, FusionState] = {}  # "decision/item"
        self.bursts = BurstDetector()
        self.epoch_ms = START
        self.count = np.zeros(N_ITEMS)
        self.sum = np.zeros(N_ITEMS)

    def receive(self, feedback: Feedback) -> Verdict:
        event = feedback.event
        if event.event_id in self.verdicts:
            return self.verdicts[event.event_id]  # acknowledged as a duplicate, changes nothing
        decision = self.decisions.get(feedback.decision_id)
        burst = counts_toward_burst(event.signal) and self.bursts.observe(feedback.user, event.occurred_at_ms)
        verdict = assess(event, EventContext(decision_known=decision is not None, burst=burst))
        if verdict.records:
            self.verdicts[event.event_id] = verdict
        if verdict.trains and decision is not None:
            state = self._state(feedback.decision_id, feedback.item)
            old, new = state.add(event)
            if new != old:
                self._learn(feedback.item, decision.decided_at_ms, 0.0, new - old)
        return verdict

    def close_windows(self, now_ms: int) -> None:
        """Learn the default reward of every decision-item whose window closed without feedback."""
        for decision_id, decision in sorted(self.decisions.items()):
            if DecisionWindow.of(decision.decided_at_ms, self.config).is_closed(now_ms):
                for item in range(N_ITEMS):
                    self._state(decision_id, item)

    def _state(self, decision_id: str, item: int) -> FusionState:
        key = f"{decision_id}/{item}"
        if key not in self.fusion:
            decided_at = self.decisions[decision_id].decided_at_ms
            self.fusion[key] = FusionState(self.config, decided_at)
            self._learn(item, decided_at, 1.0, self.config.default_reward)  # the first value; then corrections
        return self.fusion[key]

    def _learn(self, arm: int, decided_at_ms: int, count: float, reward: float) -> None:
        half_life = self.config.half_life_seconds
        if needs_rebase(decided_at_ms, half_life, self.epoch_ms):
            moved = rebase({"count": self.count, "sum": self.sum}, self.epoch_ms, decided_at_ms, half_life)
            self.count, self.sum, self.epoch_ms = moved["count"], moved["sum"], decided_at_ms
        weight = decay_weight(decided_at_ms, half_life, self.epoch_ms)
        self.count[arm] += weight * count
        self.sum[arm] += weight * reward

    def present(self, now_ms: int) -> tuple[np.ndarray, np.ndarray]:
        scale = decay_weight(now_ms, self.config.half_life_seconds, self.epoch_ms)
        return self.count / scale, self.sum / scale

    def snapshot(self) -> str:
        """Everything the engine owns, as plain JSON (what a shard would write to Redis)."""
        return json.dumps(
            {
                "verdicts": {k: [v.outcome.value, v.reason] for k, v in sorted(self.verdicts.items())},
                "fusion": {k: s.to_dict() for k, s in sorted(self.fusion.items())},
                "bursts": self.bursts.to_lists(),
                "epoch_ms": self.epoch_ms,
                "count": self.count.tolist(),
                "sum": self.sum.tolist(),
            }
        )

    @classmethod
    def restore(cls, blob: str, config: RewardConfig, decisions: dict[str, Decision]) -> Engine:
        raw = json.loads(blob)
        engine = cls(config, decisions)
        engine.verdicts = {k: Verdict(Outcome(o), reason) for k, (o, reason) in raw["verdicts"].items()}
        engine.fusion = {k: FusionState.from_dict(s, config) for k, s in raw["fusion"].items()}
        engine.bursts = BurstDetector.from_lists(raw["bursts"])
        engine.epoch_ms = raw["epoch_ms"]
        engine.count, engine.sum = np.array(raw["count"]), np.array(raw["sum"])
        return engine

    def identity(self) -> dict[str, Any]:
        """The part of the state that must be identical whatever the arrival order."""
        return {
            "verdicts": dict(sorted(self.verdicts.items())),
            "fusion": {key: (state.to_dict(), state.reward) for key, state in sorted(self.fusion.items())},
        }


def _scenario(seed: int) -> tuple[dict[str, Decision], list[Feedback]]:
    rng = random.Random(seed)
    decisions = {
        f"d{k:02d}": Decision(f"user-{k % 3}", START + k * 10 * MINUTE + rng.randrange(MINUTE)) for k in range(12)
    }
    feedback = []
    # Every signal, and more of those whose aggregate is order-sensitive to get wrong (latest, sum).
    signals = [*Signal, *[Signal.RATING, Signal.LIKE, Signal.DISLIKE, Signal.BOOKMARK, Signal.PURCHASE] * 3]
    for k in range(300):
        decision_id = rng.choice([*decisions, "d-unknown"])
        decided = decisions.get(decision_id, Decision("user-0", START)).decided_at_ms
        user = decisions.get(decision_id, Decision("user-0", START)).user
        signal = rng.choice(signals)
        value = float(rng.randint(0, 1)) if signal not in (Signal.DWELL, Signal.RATING, Signal.PURCHASE) else 0.0
        if signal is Signal.DWELL:
            value = rng.choice([3.0, 12.5, 45.0, -2.0])  # -2: rejected
        elif signal is Signal.RATING:
            value = rng.choice([1.0, 2.5, 4.0, 5.0, 7.0])  # 7: rejected
        elif signal is Signal.PURCHASE:
            value = rng.choice([5.0, 19.99, 250.0])
        occurred = decided + rng.choice([-2_000, 30_000, 20 * MINUTE, 59 * MINUTE, 61 * MINUTE, 5 * 60 * MINUTE])
        occurred += rng.randrange(10_000)
        delay = rng.choice([200, 1_000, 5 * MINUTE, 8 * DAY, -10 * MINUTE])  # 8 days: flagged; -10 min: rejected
        event = Event(f"ev-{k:03d}", signal, value, occurred, occurred + delay)
        feedback.append(Feedback(user, decision_id, rng.randrange(N_ITEMS), event))
    return decisions, feedback


def _in_order(config: RewardConfig, decisions: dict[str, Decision], feedback: list[Feedback]) -> Engine:
    engine = Engine(config, decisions)
    for item in sorted(feedback, key=lambda f: (f.event.received_at_ms, f.event.event_id)):
        engine.receive(item)
    engine.close_windows(now_ms=START + 30 * DAY)
    return engine


def _replayed(config: RewardConfig, decisions: dict[str, Decision], feedback: list[Feedback], seed: int) -> Engine:
    rng = random.Random(seed)
    arrivals = feedback + [f for f in feedback if rng.random() < 0.3]  # retries: the same logged event again
    rng.shuffle(arrivals)
    crash = rng.randrange(len(arrivals))
    engine = Engine(config, decisions)
    for item in arrivals[:crash]:
        engine.receive(item)
    engine.close_windows(now_ms=START + 60 * MINUTE)  # the service's clock: some windows already closed
    # Crash and restart from the snapshot; at-least-once delivery hands the last 25 events over again.
    engine = Engine.restore(engine.snapshot(), config, decisions)
    for item in arrivals[max(crash - 25, 0) :]:
        engine.receive(item)
    engine.close_windows(now_ms=START + 30 * DAY)
    return engine


# Moderate weights keep most rewards inside (0, 1), where a wrong aggregate would show.
WEIGHTS = {
    "click": {"weight": 0.2},
    "dwell": {"weight": 0.15},
    "rating": {"weight": 0.3},
    "like": {"weight": 0.15},
    "bookmark": {"weight": 0.1},
    "purchase": {"weight": 0.25, "transform": "linear", "scale": 300},
    "dislike": {"weight": -0.2},
    "skip": {"weight": -0.1},
}
CONFIGS = {
    "apply, decay": RewardConfig.from_dict({"half_life_seconds": 1800, "default_reward": 0.1, "signals": WEIGHTS}),
    "ignore late, no decay": RewardConfig.from_dict(
        {"late_rule": "ignore_for_training", "window_seconds": 1800, "signals": WEIGHTS}
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_replays_with_retries_and_reordering_end_in_the_exactly_once_state(name: str) -> None:
    config = CONFIGS[name]
    decisions, feedback = _scenario(seed=11)
    reference = _in_order(config, decisions, feedback)
    outcomes = [v.outcome for v in reference.verdicts.values()]
    assert outcomes.count(Outcome.FLAG) >= 5 and outcomes.count(Outcome.ACCEPT) >= 50  # the scenario has both
    assert len(reference.fusion) == len(decisions) * N_ITEMS
    for seed in range(12):
        replayed = _replayed(config, decisions, feedback, seed)
        assert replayed.identity() == reference.identity(), seed
        for got, want in zip(replayed.present(START), reference.present(START), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # What was learned is the final fused reward of every decision-item, weighted by the decision's time.
    expected_sum = np.zeros(N_ITEMS)
    for key, state in reference.fusion.items():
        decision_id, item = key.split("/")
        weight = decay_weight(decisions[decision_id].decided_at_ms, config.half_life_seconds, START)
        expected_sum[int(item)] += weight * state.reward
    np.testing.assert_allclose(reference.present(START)[1], expected_sum, rtol=1e-12)
