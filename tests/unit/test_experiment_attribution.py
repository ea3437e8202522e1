"""Streaming metric attribution: per-user values and the variant sums they add up to."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardloop.learning.experiments.attribution import Event, attribute, parse_exposures, value_field
from rewardloop.learning.experiments.spec import spec_from_dict

SPEC = spec_from_dict(
    "e",
    {
        "variants": {"a": 1, "b": 1},
        "primary_metric": {"source": "purchase", "aggregate": "conversion"},
        "guardrails": [
            {"source": "purchase", "aggregate": "sum", "name": "revenue"},
            {"source": "skip", "aggregate": "count", "surface": "home", "higher_is_better": False},
            {"source": "reward", "aggregate": "sum"},
        ],
    },
)


def _event(signal: str, value: float = 1.0, at: int = 100, surface: str = "home", reward: float = 0.0) -> Event:
    return Event(signal, value, reward, surface, at)


def test_each_aggregate_moves_as_defined() -> None:
    events = [
        _event("purchase", 20.0, reward=1.0), _event("purchase", 5.0, reward=0.5),
        _event("skip"), _event("skip", surface="other"), _event("click", reward=0.25),
    ]  # fmt: skip
    update = attribute({"e": SPEC}, {"e": ("b", 50)}, {}, events)
    assert update.values == {
        value_field("e", "purchase_conversion"): 1.0,
        value_field("e", "revenue"): 25.0,
        value_field("e", "skip_count"): 1.0,
        value_field("e", "reward_sum"): 1.75,
    }
    assert update.sums[("e", "b", "revenue")] == pytest.approx((25.0, 625.0))
    assert update.sums[("e", "b", "purchase_conversion")] == (1.0, 1.0)


def test_before_exposure_unknown_or_stopped_experiments_count_nothing() -> None:
    assert attribute({"e": SPEC}, {"e": ("a", 500)}, {}, [_event("purchase", at=499)]).sums == {}
    assert attribute({}, {"e": ("a", 0)}, {}, [_event("purchase")]).sums == {}
    # A user who converted already does not convert again.
    again = attribute(
        {"e": SPEC}, {"e": ("a", 0)}, {value_field("e", "purchase_conversion"): 1.0}, [_event("purchase")]
    )
    assert ("e", "a", "purchase_conversion") not in again.sums


def test_exposures_parse_from_the_users_hash() -> None:
    fields = {"x:e": "treat|ment|123", "m:e:click_conversion": "1.0", "x:f": "a|7"}
    assert parse_exposures(fields) == {"e": ("treat|ment", 123), "f": ("a", 7)}


@settings(max_examples=50, derandomize=True, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.tuples(st.sampled_from(["purchase", "skip", "click"]), st.floats(0, 100), st.integers(0, 3))),
        max_size=6,
    )
)
def test_sums_always_equal_the_users_values(batches: list[list[tuple[str, float, int]]]) -> None:
    """Applied batch after batch for three users, the sums' running totals are Σy and Σy² of the values."""
    values: dict[str, dict[str, float]] = {u: {} for u in "xyz"}
    sums: dict[str, list[float]] = {}
    for batch in batches:
        for user in values:
            events = [_event(s, v, at=100 + t) for s, v, t in batch]
            update = attribute({"e": SPEC}, {"e": ("a", 101)}, values[user], events)
            values[user].update(update.values)
            for (_, _, metric), (dy, dyy) in update.sums.items():
                total = sums.setdefault(metric, [0.0, 0.0])
                total[0] += dy
                total[1] += dyy
    for metric, (sy, syy) in sums.items():
        ys = [v.get(value_field("e", metric), 0.0) for v in values.values()]
        assert sy == pytest.approx(sum(ys), rel=1e-9, abs=1e-6)
        assert syy == pytest.approx(sum(y * y for y in ys), rel=1e-9, abs=1e-6)


def test_the_pre_period_value_counts_only_the_days_before_exposure() -> None:
    from rewardloop.learning.experiments.attribution import DAY_MS, pre_period_value
    from rewardloop.learning.experiments.spec import Metric

    exposed = 100 * DAY_MS
    events = [
        Event("purchase", 5.0, 0.0, "home", exposed - 15 * DAY_MS),  # before the window
        Event("purchase", 2.0, 0.0, "home", exposed - 3 * DAY_MS),
        Event("click", 1.0, 0.0, "home", exposed - 2 * DAY_MS),
        Event("purchase", 4.0, 0.0, "shop", exposed - 1),
        Event("purchase", 7.0, 0.0, "home", exposed),  # at the exposure: the variant's
    ]
    assert pre_period_value(Metric("purchase", "sum"), events, exposed, 14) == 6.0
    assert pre_period_value(Metric("purchase", "count", surface="home"), events, exposed, 14) == 1.0
    assert pre_period_value(Metric("purchase", "conversion"), events, exposed, 14) == 1.0
    assert pre_period_value(Metric("purchase", "sum"), events, exposed, 0) == 0.0
