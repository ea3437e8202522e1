"""Feedback quality: reject / flag / accept table, the burst detector's edges, its state."""

from __future__ import annotations

import json
import math
import re

import pytest

from rewardloop.learning.params import ConfigError
from rewardloop.learning.rewards import (
    BurstDetector,
    Event,
    EventContext,
    Outcome,
    QualityConfig,
    Signal,
    assess,
    counts_toward_burst,
)

NOW = 1_700_000_000_000
MINUTE = 60_000
DAY = 86_400_000
OK = EventContext()
UNKNOWN = EventContext(decision_known=False)
BURST = EventContext(burst=True)


def ev(signal: Signal = Signal.CLICK, value: float = 1.0, ahead: int = 0) -> Event:
    """An event received at NOW that occurred ``ahead`` ms later (negative: earlier)."""
    return Event("e", signal, value, NOW + ahead, NOW)


# (case, event, context, outcome, reason pattern)
QUALITY_TABLE = [
    ("valid click", ev(), OK, Outcome.ACCEPT, "^$"),
    ("valid dwell", ev(Signal.DWELL, 12.5), OK, Outcome.ACCEPT, "^$"),
    ("click out of range", ev(value=2.0), OK, Outcome.REJECT, r"^value: click value must be 0 or 1"),
    ("click not whole", ev(value=0.5), OK, Outcome.REJECT, r"^value: click value must be 0 or 1"),
    (
        "dwell negative",
        ev(Signal.DWELL, -1.0),
        OK,
        Outcome.REJECT,
        r"^value: dwell value must be seconds in \[0, 86400\]",
    ),
    ("rating NaN", ev(Signal.RATING, math.nan), OK, Outcome.REJECT, "^value: rating value must be finite"),
    ("purchase too large", ev(Signal.PURCHASE, 2e6), OK, Outcome.REJECT, "^value: purchase value must be currency"),
    ("5 min ahead: clock skew", ev(ahead=5 * MINUTE), OK, Outcome.ACCEPT, "^$"),
    ("5 min + 1 ms ahead", ev(ahead=5 * MINUTE + 1), OK, Outcome.REJECT, r"^occurred_at: must be at most 300000 ms"),
    ("a day ahead", ev(ahead=DAY), OK, Outcome.REJECT, "^occurred_at: .* got 86400000 ms in the future"),
    ("unknown decision", ev(), UNKNOWN, Outcome.FLAG, "^decision_id: unknown decision"),
    ("7 days old", ev(ahead=-7 * DAY), OK, Outcome.ACCEPT, "^$"),
    ("7 days + 1 ms old", ev(ahead=-7 * DAY - 1), OK, Outcome.FLAG, r"^occurred_at: 604800001 ms before receipt"),
    ("burst", ev(), BURST, Outcome.FLAG, r"^burst: more than 20 actions in 1 s or 600 in 60 s"),
    ("bad value beats unknown decision", ev(value=3.0), UNKNOWN, Outcome.REJECT, "^value:"),
    ("future beats unknown decision", ev(ahead=DAY), UNKNOWN, Outcome.REJECT, "^occurred_at:"),
    ("unknown decision beats age", ev(ahead=-30 * DAY), UNKNOWN, Outcome.FLAG, "^decision_id:"),
    ("age beats burst", ev(ahead=-30 * DAY), BURST, Outcome.FLAG, "^occurred_at:"),
]


@pytest.mark.parametrize(
    ("case", "event", "context", "outcome", "reason"), QUALITY_TABLE, ids=[row[0] for row in QUALITY_TABLE]
)
def test_quality_rule(case: str, event: Event, context: EventContext, outcome: Outcome, reason: str) -> None:
    verdict = assess(event, context)
    assert verdict.outcome is outcome
    assert re.search(reason, verdict.reason), verdict.reason
    assert verdict.records == (outcome is not Outcome.REJECT)
    assert verdict.trains == (outcome is Outcome.ACCEPT)


def test_limits_are_configurable() -> None:
    config = QualityConfig(max_future_ms=0, max_age_ms=DAY)
    assert assess(ev(ahead=1), OK, config).outcome is Outcome.REJECT
    assert assess(ev(ahead=-DAY - 1), OK, config).outcome is Outcome.FLAG


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_future_ms": -1}, r"max_future_ms must be in \[0, 86400000\], got -1"),
        ({"max_age_ms": 10}, r"max_age_ms must be in \[60000, 31536000000\], got 10"),
        ({"burst_per_second": 0}, r"burst_per_second must be in \[1, 1000000\], got 0"),
        ({"burst_per_second": 1.5}, r"burst_per_second must be an integer, got 1.5"),
        ({"burst_per_minute": 10}, r"burst_per_minute must be in \[20, 1000000\], got 10"),
    ],
)
def test_bad_quality_configs_name_the_parameter(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}$"):
        QualityConfig(**kwargs)


# --- bursts -------------------------------------------------------------------------------------------------------

SMALL = QualityConfig(burst_per_second=3, burst_per_minute=10)


def _observe(times: list[int], config: QualityConfig = SMALL, user: str = "u") -> list[bool]:
    detector = BurstDetector(config)
    return [detector.observe(user, t) for t in times]


@pytest.mark.parametrize(
    ("times", "bursts"),
    [
        ([0, 0, 0], [False, False, False]),  # exactly at the per-second limit
        ([0, 0, 0, 0], [False, False, False, True]),  # one over
        ([0, 300, 600, 999], [False, False, False, True]),  # all inside (999 - 1000, 999]
        ([0, 300, 600, 1_000], [False, False, False, False]),  # 0 is on the window's open edge: out
        ([0, 0, 0, 0, 999], [False, False, False, True, True]),  # (-1, 999] holds all five
        ([0, 0, 0, 0, 1_000], [False, False, False, True, False]),  # (0, 1000] holds only the last
        ([500, 0, 250, 100], [False, False, False, True]),  # out of order within the second: still counted
    ],
)
def test_per_second_limit_edges(times: list[int], bursts: list[bool]) -> None:
    assert _observe(times) == bursts


def test_per_minute_limit_edges() -> None:
    spaced = [k * 5_000 for k in range(10)]  # 10 in a minute, 1 per 5 s: at the limit
    assert _observe(spaced) == [False] * 10
    assert _observe([*spaced, 50_001]) == [False] * 10 + [True]  # 11 in (-9 999, 50 001]
    assert _observe([*spaced, 60_000]) == [False] * 11  # 0 falls out of (0, 60 000]
    assert _observe([*spaced, 59_999]) == [False] * 10 + [True]


def test_users_are_counted_apart_and_state_round_trips() -> None:
    detector = BurstDetector(SMALL)
    assert [detector.observe(user, 0) for user in ("a", "b", "a", "b", "a")] == [False] * 5
    saved = json.loads(json.dumps(detector.to_lists()))
    restored = BurstDetector.from_lists(saved, SMALL)
    assert restored.to_lists() == detector.to_lists() == {"a": [0, 0, 0], "b": [0, 0]}
    assert [restored.observe("a", 10), restored.observe("b", 10)] == [True, False]
    assert [detector.observe("a", 10), detector.observe("b", 10)] == [True, False]


def test_state_stays_small_under_a_flood() -> None:
    detector = BurstDetector(SMALL)
    flags = [detector.observe("bot", t // 50) for t in range(10_000)]
    assert not any(flags[:3]) and all(flags[10:])
    assert len(detector.to_lists()["bot"]) <= SMALL.burst_per_minute + 1
    detector.forget_before(10_000)
    assert detector.to_lists() == {}


def test_default_limits_let_a_fast_human_through() -> None:
    # A scroller reporting skip + dwell + completion per item, two items a second, for a minute.
    times = [item * 500 for item in range(120) for _ in range(3)]
    assert not any(_observe(times, QualityConfig()))
    assert counts_toward_burst(Signal.CLICK) and not counts_toward_burst(Signal.IMPRESSION)
