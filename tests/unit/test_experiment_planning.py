"""Planning at creation: the spec's baseline and the surfaces' traffic give the days the experiment
needs, agreeing with statsmodels' power solver; without a baseline or traffic the plan says what is missing."""

from __future__ import annotations

import math

import pytest
from statsmodels.stats.power import NormalIndPower

from rewardloop.learning.experiments.results import plan_at_creation
from rewardloop.learning.experiments.spec import spec_from_dict
from rewardloop.learning.params import ConfigError


def spec(**fields: object):
    return spec_from_dict("e", {"variants": {"a": 1, "b": 1}, "primary_metric": {"source": "click"}, **fields})


def test_a_conversion_plan_agrees_with_statsmodels() -> None:
    planned = plan_at_creation(spec(baseline_mean=0.1, mde=0.05, planned_days=14), daily_users=20_000)
    sd = math.sqrt(0.1 * 0.9)
    expected = NormalIndPower().solve_power(effect_size=0.005 / sd, alpha=0.05, power=0.8, ratio=1.0)
    assert planned.users_per_variant == pytest.approx(expected, rel=1e-5)
    # 20,000 users a day enrol, half in each variant.
    assert planned.days_needed == pytest.approx(expected / 10_000, rel=1e-5)
    assert planned.feasible and "within its planned 14" in planned.message


def test_coverage_and_weights_slow_the_plan_down() -> None:
    even = plan_at_creation(spec(baseline_mean=0.1), daily_users=50_000)
    skewed = plan_at_creation(
        spec_from_dict("e", {"variants": {"a": 3, "b": 1}, "primary_metric": {"source": "click"},
                             "baseline_mean": 0.1, "coverage": 0.5}),
        daily_users=50_000,
    )  # fmt: skip
    # Half the users enrol, and the smallest variant gets a quarter of them instead of half.
    assert skewed.days_needed == pytest.approx(even.days_needed * 4, rel=1e-9)


def test_an_experiment_that_cannot_decide_in_time_is_flagged() -> None:
    planned = plan_at_creation(spec(baseline_mean=0.02, mde=0.01, planned_days=7), daily_users=5_000)
    assert not planned.feasible and "beyond its planned 7" in planned.message


def test_a_sum_metric_needs_its_sd_and_expected_traffic_overrides_the_measured() -> None:
    raw = {"primary_metric": {"source": "purchase", "aggregate": "sum"}, "baseline_mean": 3.0}
    assert "give baseline_sd" in plan_at_creation(spec(**raw), daily_users=1_000).message
    planned = plan_at_creation(spec(**raw, baseline_sd=6.0, expected_daily_users=40_000), daily_users=10)
    assert planned.users_per_day == pytest.approx(40_000)
    expected = NormalIndPower().solve_power(effect_size=0.02 * 3.0 / 6.0, alpha=0.05, power=0.8, ratio=1.0)
    assert planned.users_per_variant == pytest.approx(expected, rel=1e-5)


def test_without_a_baseline_or_traffic_the_plan_says_what_is_missing() -> None:
    assert "give baseline_mean" in plan_at_creation(spec(), daily_users=1_000).message
    no_traffic = plan_at_creation(spec(baseline_mean=0.1), daily_users=0)
    assert "give expected_daily_users" in no_traffic.message and not no_traffic.feasible


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"baseline_mean": 1.5}, "baseline_mean"),  # a conversion rate
        ({"baseline_sd": 0}, "baseline_sd"),
        ({"expected_daily_users": -1}, "expected_daily_users"),
        ({"refuse_infeasible": "yes"}, "refuse_infeasible"),
    ],
)
def test_bad_planning_fields_are_named(fields: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        spec(**fields)
