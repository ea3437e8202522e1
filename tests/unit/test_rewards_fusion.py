"""Fusion of a decision-item's events into one reward: the rule (hand-computed table), the window and
late rule, and the order-independence / idempotence property over random event sets."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from rewardloop.learning.rewards import (
    SIGNALS,
    DecisionWindow,
    Event,
    EventConflict,
    FusionState,
    LateRule,
    RewardConfig,
    Signal,
    Timing,
    fuse,
    late_event_trains,
)

DECIDED = 1_000_000
MINUTE = 60_000


def ev(event_id: str, signal: Signal, value: float, at: int = DECIDED + 5_000, received: int | None = None) -> Event:
    return Event(event_id, signal, value, at, at + 100 if received is None else received)


def cfg(**raw: Any) -> RewardConfig:
    return RewardConfig.from_dict(raw)


DEFAULT = RewardConfig()
HALVES = cfg(signals={"click": {"weight": 0.5}, "dwell": {"weight": 0.5}})
SHOP = cfg(signals={"purchase": {"weight": 0.5, "transform": "linear", "scale": 100, "cap": 1.0}})
SOFT_SKIP = cfg(signals={"skip": {"weight": -0.5}})
GENEROUS = cfg(default_reward=0.3)
DONE = cfg(signals={"completion": {"transform": "threshold", "at": 0.9}})
STRICT = cfg(late_rule="ignore_for_training", window_seconds=60)
LATE = DECIDED + 60 * MINUTE + 1  # one ms past the default window

# (case, config, events, reward): every reward computed by hand from the rule in fusion.py.
FUSION_TABLE = [
    ("nothing: default", DEFAULT, [], 0.0),
    ("nothing: configured default", GENEROUS, [], 0.3),
    ("impression only: weight 0, default", GENEROUS, [ev("i", Signal.IMPRESSION, 1)], 0.3),
    ("click only", DEFAULT, [ev("c", Signal.CLICK, 1)], 1.0),
    ("shown, not clicked", GENEROUS, [ev("c", Signal.CLICK, 0)], 0.0),
    ("click + impression", DEFAULT, [ev("i", Signal.IMPRESSION, 1), ev("c", Signal.CLICK, 1)], 1.0),
    ("session end only: weight 0, default", GENEROUS, [ev("e", Signal.SESSION_END, 1)], 0.3),
    ("session end moves no reward", HALVES, [ev("c", Signal.CLICK, 1), ev("e", Signal.SESSION_END, 1)], 0.5),
    ("click + dwell: 0.5 + 0.5 * 15/30", HALVES, [ev("c", Signal.CLICK, 1), ev("d", Signal.DWELL, 15)], 0.75),
    ("dwell saturating: 0.5 * min(90/30, 1)", HALVES, [ev("d", Signal.DWELL, 90)], 0.5),
    ("dwell reports: max", HALVES, [ev("d1", Signal.DWELL, 20), ev("d2", Signal.DWELL, 6)], 0.5 * 20 / 30),
    ("dwell alone as in reward.py", DEFAULT, [ev("d", Signal.DWELL, 12)], 0.4),
    ("rating: (4 - 1) / 4", DEFAULT, [ev("r", Signal.RATING, 4)], 0.75),
    (
        "rating overrides: the later one counts",
        DEFAULT,
        [ev("r2", Signal.RATING, 2, at=DECIDED + 9_000), ev("r1", Signal.RATING, 5, at=DECIDED + 1_000)],
        0.25,
    ),
    (
        "rating tie on time: larger event_id",
        DEFAULT,
        [ev("rb", Signal.RATING, 3), ev("ra", Signal.RATING, 5)],
        0.5,
    ),
    (
        "like withdrawn",
        DEFAULT,
        [ev("l1", Signal.LIKE, 1, at=DECIDED + 1_000), ev("l0", Signal.LIKE, 0, at=DECIDED + 2_000)],
        0.0,
    ),
    ("negative skip: 1 - 0.5", SOFT_SKIP, [ev("c", Signal.CLICK, 1), ev("s", Signal.SKIP, 1)], 0.5),
    ("click then default skip: 1 - 1", DEFAULT, [ev("c", Signal.CLICK, 1), ev("s", Signal.SKIP, 1)], 0.0),
    ("hide alone clips at 0", GENEROUS, [ev("h", Signal.HIDE, 1)], 0.0),
    ("report cancels a share", DEFAULT, [ev("sh", Signal.SHARE, 1), ev("rp", Signal.REPORT, 1)], 0.0),
    (
        "purchases add up: 0.5 * (30 + 50) / 100",
        SHOP,
        [ev("p1", Signal.PURCHASE, 30), ev("p2", Signal.PURCHASE, 50)],
        0.4,
    ),
    (
        "purchase capped: 0.5 * min(130 / 100, 1)",
        SHOP,
        [ev("p1", Signal.PURCHASE, 80), ev("p2", Signal.PURCHASE, 50)],
        0.5,
    ),
    ("purchase log1p default", DEFAULT, [ev("p", Signal.PURCHASE, 10)], math.log(11) / math.log(101)),
    ("clip to 1", DEFAULT, [ev("c", Signal.CLICK, 1), ev("s", Signal.SHARE, 1), ev("l", Signal.LIKE, 1)], 1.0),
    ("completion threshold met", DONE, [ev("k", Signal.COMPLETION, 0.95)], 1.0),
    ("completion threshold missed", DONE, [ev("k", Signal.COMPLETION, 0.85)], 0.0),
    ("late event applied by default", DEFAULT, [ev("c", Signal.CLICK, 1, at=LATE)], 1.0),
    ("late event ignored for training", STRICT, [ev("c", Signal.CLICK, 1, at=DECIDED + MINUTE + 1)], 0.0),
    ("window boundary is on time", STRICT, [ev("c", Signal.CLICK, 1, at=DECIDED + MINUTE)], 1.0),
    ("before the decision: on time", STRICT, [ev("c", Signal.CLICK, 1, at=DECIDED - 5_000)], 1.0),
    (
        "only the on-time part counts",
        STRICT,
        [ev("r1", Signal.RATING, 5, at=DECIDED + 1_000), ev("r2", Signal.RATING, 1, at=DECIDED + 2 * MINUTE)],
        1.0,
    ),
    ("duplicates count once", SHOP, [ev("p", Signal.PURCHASE, 30), ev("p", Signal.PURCHASE, 30)], 0.15),
]


@pytest.mark.parametrize(("case", "config", "events", "reward"), FUSION_TABLE, ids=[row[0] for row in FUSION_TABLE])
def test_fusion_rule(case: str, config: RewardConfig, events: list[Event], reward: float) -> None:
    assert fuse(events, config, decided_at_ms=DECIDED) == pytest.approx(reward, abs=1e-15)
    for order in (events, events[::-1]):
        state = FusionState(config, decided_at_ms=DECIDED)
        for event in order:
            state.add(event)
        assert state.reward == fuse(events, config, decided_at_ms=DECIDED)


def test_no_window_means_everything_is_on_time() -> None:
    late = [ev("c", Signal.CLICK, 1, at=DECIDED + 10**9)]
    assert fuse(late, STRICT) == 1.0
    assert fuse(late, STRICT, decided_at_ms=DECIDED) == 0.0


@pytest.mark.parametrize(
    ("occurred", "timing", "trains_apply", "trains_ignore"),
    [
        (DECIDED - 1, Timing.ON_TIME, True, True),
        (DECIDED, Timing.ON_TIME, True, True),
        (DECIDED + MINUTE, Timing.ON_TIME, True, True),
        (DECIDED + MINUTE + 1, Timing.LATE, True, False),
        (DECIDED + 10**10, Timing.LATE, True, False),
    ],
)
def test_decision_window(occurred: int, timing: Timing, trains_apply: bool, trains_ignore: bool) -> None:
    apply = DecisionWindow.of(DECIDED, cfg(window_seconds=60))
    ignore = DecisionWindow.of(DECIDED, cfg(window_seconds=60, late_rule="ignore_for_training"))
    assert apply.timing(occurred) is ignore.timing(occurred) is timing
    assert (apply.trains(occurred), ignore.trains(occurred)) == (trains_apply, trains_ignore)
    assert apply.closes_at_ms == DECIDED + MINUTE
    assert not apply.is_closed(DECIDED + MINUTE) and apply.is_closed(DECIDED + MINUTE + 1)
    assert late_event_trains(LateRule.APPLY) and not late_event_trains(LateRule.IGNORE_FOR_TRAINING)


def test_late_events_are_recorded_not_dropped() -> None:
    state = FusionState(STRICT, decided_at_ms=DECIDED)
    late = ev("late", Signal.CLICK, 1, at=DECIDED + 2 * MINUTE)
    assert state.add(late) == (0.0, 0.0)
    assert state.events == (late,) and state.ignored == (late,)
    assert state.add(late) == (0.0, 0.0)  # its retry is still recognised
    assert state.add(ev("ok", Signal.CLICK, 1)) == (0.0, 1.0)
    assert [e.event_id for e in state.ignored] == ["late"]


def test_duplicates_change_nothing_and_keep_the_first_receipt() -> None:
    state = FusionState(DEFAULT, decided_at_ms=DECIDED)
    retry = ev("c", Signal.CLICK, 1, received=DECIDED + 50_000)
    first = ev("c", Signal.CLICK, 1, received=DECIDED + 6_000)
    assert state.add(retry) == (0.0, 1.0)
    assert state.add(first) == (1.0, 1.0)
    assert state.add(retry) == (1.0, 1.0)
    assert state.events == (first,)


@pytest.mark.parametrize(
    "other",
    [
        ev("c", Signal.CLICK, 0),
        ev("c", Signal.LIKE, 1),
        ev("c", Signal.CLICK, 1, at=DECIDED + 6_000),
    ],
)
def test_a_reused_event_id_with_other_facts_is_refused(other: Event) -> None:
    original = ev("c", Signal.CLICK, 1)
    state = FusionState(DEFAULT, decided_at_ms=DECIDED)
    state.add(original)
    with pytest.raises(EventConflict, match="event_id 'c' was already recorded"):
        state.add(other)
    with pytest.raises(EventConflict):
        fuse([original, other], DEFAULT)
    assert state.reward == 1.0 and state.events == (original,)


def test_state_round_trips_through_plain_values() -> None:
    state = FusionState(STRICT, decided_at_ms=DECIDED)
    for event in [ev("a", Signal.RATING, 4), ev("b", Signal.PURCHASE, 12.5), ev("z", Signal.CLICK, 1, at=LATE)]:
        state.add(event)
    raw = json.loads(json.dumps(state.to_dict()))
    again = FusionState.from_dict(raw, STRICT)
    assert again == state and again.reward == state.reward and again.ignored == state.ignored
    assert FusionState.from_dict(raw, DEFAULT) != state  # another surface's rules


# --- property: any arrival order, with retries, ends where fuse() of the distinct set is ---------------------------

MIXED = cfg(
    default_reward=0.2,
    window_seconds=120,
    signals={
        "click": {"weight": 0.4},
        "dwell": {"weight": 0.3, "scale": 60},
        "completion": {"weight": 0.2},
        "purchase": {"weight": 0.7, "transform": "linear", "scale": 40, "cap": 1.5},
        "skip": {"weight": -0.35},
        "hide": {"weight": -0.8},
        "impression": {"weight": 0.05},
    },
)
MIXED_STRICT = RewardConfig.from_dict({**MIXED.to_dict(), "late_rule": "ignore_for_training"})


def _random_value(rng: random.Random, signal: Signal) -> float:
    spec = SIGNALS[signal]
    if spec.integral:
        return float(rng.randint(int(spec.low), int(spec.high)))
    high = min(spec.high, 200.0)
    return round(rng.uniform(spec.low, high), rng.choice([0, 2, 6]))


def _random_events(rng: random.Random) -> list[Event]:
    events = []
    for k in range(rng.randint(0, 14)):
        signal = rng.choice(list(Signal))
        # Few distinct times, so that ties in occurred_at (broken by event_id) happen.
        at = DECIDED + rng.choice([-3_000, 0, 1_000, 1_000, 60_000, 120_000, 120_001, 400_000])
        events.append(Event(f"e{k:02d}", signal, _random_value(rng, signal), at, at + rng.randint(0, 5_000)))
    return events


def _arrivals(rng: random.Random, events: list[Event]) -> list[Event]:
    """``events`` shuffled, with retries: some resent as is, some with a later receipt time."""
    retries = [e for e in events if rng.random() < 0.4]
    retries += [Event(e.event_id, e.signal, e.value, e.occurred_at_ms, e.received_at_ms + 30_000) for e in retries[:2]]
    arrivals = events + retries
    rng.shuffle(arrivals)
    return arrivals


@pytest.mark.parametrize("config", [MIXED, MIXED_STRICT, DEFAULT], ids=["apply", "ignore", "default"])
def test_incremental_fusion_is_order_independent_and_idempotent(config: RewardConfig) -> None:
    rng = random.Random(20261124)
    for _ in range(200):
        events = _random_events(rng)
        expected = fuse(events, config, decided_at_ms=DECIDED)
        finals = []
        for _ in range(3):
            state = FusionState(config, decided_at_ms=DECIDED)
            seen: set[str] = set()
            deltas = []
            for event in _arrivals(rng, events):
                old, new = state.add(event)
                if event.event_id in seen:
                    assert old == new == state.reward
                seen.add(event.event_id)
                deltas.append(new - old)
            assert state.reward == expected
            assert 0.0 <= state.reward <= 1.0
            assert math.fsum(deltas) == pytest.approx(state.reward - config.default_reward, abs=1e-12)
            finals.append(state)
        assert finals[0] == finals[1] == finals[2]
        assert finals[0].events == tuple(sorted(events, key=lambda e: e.event_id))


def test_summed_signals_are_exact_in_any_order() -> None:
    # Plain float addition is not associative ((0.1 + 0.2) + 0.3 != 0.1 + (0.2 + 0.3)); fsum is exact.
    config = cfg(signals={"purchase": {"transform": "linear", "scale": 100}})
    values = [0.1, 0.2, 0.3, 1e-3, 7.77, 0.01, 3.3, 1e-9, 2.2, 0.07]
    events = [ev(f"p{k}", Signal.PURCHASE, v) for k, v in enumerate(values)]
    rng = random.Random(7)
    rewards = set()
    for _ in range(50):
        rng.shuffle(events)
        state = FusionState(config, decided_at_ms=DECIDED)
        for event in events:
            state.add(event)
        rewards.add(state.reward)
    assert rewards == {math.fsum(values) / 100}
