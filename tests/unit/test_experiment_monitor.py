"""The experiment monitor's looks (pure): auto-stop on guardrail regressions and sample-ratio
mismatches, quiet on A/A, group-sequential primary verdicts, ramp gates, state round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rewardloop.learning.experiments import lifecycle
from rewardloop.learning.experiments.buckets import BUCKETS
from rewardloop.learning.experiments.moments import Moments
from rewardloop.learning.experiments.monitor import (
    DAY_MS,
    MIN_USERS,
    RAMP,
    STOP,
    MonitorState,
    look,
    scheduled_looks,
)
from rewardloop.learning.experiments.results import effect_timeline
from rewardloop.learning.experiments.spec import spec_from_dict
from rewardloop.learning.experiments.stats import compare_proportions

HOUR_MS = 3_600_000


def running(**spec: object) -> lifecycle.Experiment:
    raw = {
        "variants": {"control": 1, "treatment": 1},
        "primary_metric": {"source": "click"},
        "guardrails": [{"source": "purchase", "tolerance": 0.0}],
        **spec,
    }
    experiment = lifecycle.create(spec_from_dict("e", raw), now_ms=0)
    return lifecycle.start(experiment, np.ones(BUCKETS, dtype=bool), now_ms=0)


class Traffic:
    """Cumulative per-variant users and conversion sums, drawn batch by batch."""

    def __init__(self, rng: np.random.Generator, rates: dict[str, dict[str, float]], split: dict[str, float]):
        self.rng, self.rates, self.split = rng, rates, split
        self.users = dict.fromkeys(split, 0)
        self.sums: dict[str, dict[str, list[float]]] = {v: {m: [0.0, 0.0] for m in rates[v]} for v in split}

    def add(self, batch: int) -> None:
        counts = self.rng.multinomial(batch, list(self.split.values()))
        for variant, n in zip(self.split, counts, strict=True):
            self.users[variant] += int(n)
            for metric, rate in self.rates[variant].items():
                hits = float(self.rng.binomial(n, rate))
                self.sums[variant][metric][0] += hits
                self.sums[variant][metric][1] += hits  # a 0/1 metric: y**2 == y

    def snapshot(self) -> tuple[dict[str, int], dict[str, dict[str, tuple[float, float]]]]:
        sums = {v: {m: (s[0], s[1]) for m, s in ms.items()} for v, ms in self.sums.items()}
        return dict(self.users), sums


def rates(control: float, treatment: float, guard_control: float = 0.2, guard_treatment: float = 0.2) -> dict:
    return {
        "control": {"click_conversion": control, "purchase_conversion": guard_control},
        "treatment": {"click_conversion": treatment, "purchase_conversion": guard_treatment},
    }


def run(experiment, traffic: Traffic, looks: int, batch: int, every_ms: int) -> tuple[MonitorState, list]:
    state, actions = MonitorState(), []
    for k in range(1, looks + 1):
        traffic.add(batch)
        users, sums = traffic.snapshot()
        outcome = look(experiment, users, sums, state, now_ms=k * every_ms)
        state = outcome.state
        if outcome.action:
            actions.append((k, outcome.action, outcome.reason))
            break
    return state, actions


def test_a_guardrail_regression_stops_the_experiment_with_a_readable_reason():
    experiment = running()
    traffic = Traffic(np.random.default_rng(1), rates(0.1, 0.1, 0.2, 0.16), {"control": 0.5, "treatment": 0.5})
    state, actions = run(experiment, traffic, looks=200, batch=200, every_ms=60_000)
    assert actions, "a 20% drop in purchases was never caught"
    k, action, reason = actions[0]
    assert action == STOP
    assert "guardrail purchase_conversion regressed in variant treatment" in reason
    assert "always-valid p" in reason
    assert k * 200 < 20_000  # caught within 100 minutes of simulated traffic at 200 users a minute
    assert state.regressions() == ["purchase_conversion|treatment"]


def test_without_auto_stop_a_regression_is_reported_not_acted_on():
    experiment = running(auto_stop=False)
    traffic = Traffic(np.random.default_rng(2), rates(0.1, 0.1, 0.2, 0.1), {"control": 0.5, "treatment": 0.5})
    state, actions = run(experiment, traffic, looks=60, batch=200, every_ms=60_000)
    assert actions == []
    assert state.regressions() == ["purchase_conversion|treatment"]


def test_a_regression_within_tolerance_is_not_one():
    # Treatment's purchases 3% lower, tolerance 10%: "worse by more than the tolerance" is false.
    experiment = running(guardrails=[{"source": "purchase", "tolerance": 0.1}])
    traffic = Traffic(np.random.default_rng(3), rates(0.1, 0.1, 0.2, 0.194), {"control": 0.5, "treatment": 0.5})
    state, actions = run(experiment, traffic, looks=150, batch=400, every_ms=60_000)
    assert actions == []
    assert state.guardrails["purchase_conversion|treatment"].test.looks > 100


def test_a_52_48_split_is_stopped_as_a_sample_ratio_mismatch():
    experiment = running()
    traffic = Traffic(np.random.default_rng(4), rates(0.1, 0.1), {"control": 0.52, "treatment": 0.48})
    _, actions = run(experiment, traffic, looks=200, batch=1_000, every_ms=60_000)
    assert actions and actions[0][1] == STOP
    assert "sample ratio mismatch" in actions[0][2]


def test_a_a_experiments_are_rarely_stopped_under_continuous_looks():
    # 200 seeded A/A experiments, 60 looks each: the guardrail test is at alpha 0.05 and the SRM
    # test at 0.001, so at most ~5% may stop (Ville), plus Monte-Carlo error.
    stops = 0
    for seed in range(200):
        traffic = Traffic(np.random.default_rng(1000 + seed), rates(0.1, 0.1), {"control": 0.5, "treatment": 0.5})
        _, actions = run(running(), traffic, looks=60, batch=100, every_ms=60_000)
        stops += bool(actions)
    assert stops / 200 <= 0.05 + 1.96 * math.sqrt(0.05 * 0.95 / 200)


def test_no_test_counts_before_every_variant_has_its_minimum():
    experiment = running()
    users = {"control": MIN_USERS - 1, "treatment": MIN_USERS * 5}
    sums = {"control": {"purchase_conversion": (50.0, 50.0)}, "treatment": {"purchase_conversion": (0.0, 0.0)}}
    outcome = look(experiment, users, sums, MonitorState(), now_ms=60_000)
    assert outcome.state.guardrails == {}


@pytest.mark.parametrize(("treatment_rate", "verdict"), [(0.12, "better"), (0.08, "worse")])
def test_the_primary_is_decided_by_its_group_sequential_looks(treatment_rate, verdict):
    experiment = running(planned_days=7, guardrails=[])
    assert scheduled_looks(experiment.spec) == 7
    traffic = Traffic(np.random.default_rng(5), rates(0.1, treatment_rate), {"control": 0.5, "treatment": 0.5})
    state = MonitorState()
    for hour in range(1, 7 * 24 + 1):
        traffic.add(200)
        users, sums = traffic.snapshot()
        state = look(experiment, users, sums, state, now_ms=hour * HOUR_MS).state
    primary = state.primary["treatment"]
    assert primary.verdict == verdict
    assert 1 <= primary.decided_look <= 7
    assert state.looks_taken == 7
    assert state.planned_users > 0


def test_a_a_primary_decisions_are_rare_over_daily_looks():
    # Traffic that reaches ~90% of the planned sample by the 7th (final) look, as planned. (The
    # thousands-of-experiments A/A proof of the design is test_sequential.py's, vectorised; this
    # checks the monitor wires it: its own looks, fractions and final look.)
    decided = 0
    runs = 300
    for seed in range(runs):
        experiment = running(planned_days=7, guardrails=[], mde=0.1)
        traffic = Traffic(np.random.default_rng(5000 + seed), rates(0.1, 0.1), {"control": 0.5, "treatment": 0.5})
        state = MonitorState()
        for day in range(1, 8):
            traffic.add(4_000)
            users, sums = traffic.snapshot()
            state = look(experiment, users, sums, state, now_ms=day * DAY_MS).state
        primary = state.primary["treatment"]
        assert primary.verdict in ("inconclusive", "better", "worse")  # the 7th look is final
        decided += primary.verdict != "inconclusive"
    assert primary.fractions[-1] > 0.8
    assert decided / runs <= 0.05 + 1.96 * math.sqrt(0.05 * 0.95 / runs)


def test_the_ramp_steps_once_held_and_its_gates_pass():
    experiment = running(
        guardrails=[],
        ramp=[{"coverage": 0.1}, {"coverage": 0.5, "hold_hours": 2, "min_users": 500}, {"coverage": 1.0}],
    )
    users = {"control": 400, "treatment": 420}
    sums = {v: {"click_conversion": (40.0, 40.0)} for v in users}
    early = look(experiment, users, sums, MonitorState(), now_ms=HOUR_MS)
    assert early.action == ""
    assert "held 1.0 of 2 h" in early.state.gate and "control 400/500" in early.state.gate
    enough = {"control": 600, "treatment": 610}
    taken = look(experiment, enough, sums, early.state, now_ms=3 * HOUR_MS)
    assert taken.action == RAMP and "coverage 50%" in taken.reason
    ramped = lifecycle.ramp(experiment, np.ones(BUCKETS, dtype=bool), 3 * HOUR_MS, by=lifecycle.MONITOR)
    assert (ramped.coverage, ramped.stepped_ms, ramped.changed_by) == (0.5, 3 * HOUR_MS, "monitor")
    # The next step holds for its own 24 h from the moment this one was reached.
    assert look(ramped, enough, sums, taken.state, now_ms=4 * HOUR_MS).action == ""


def test_the_ramp_waits_while_the_sample_ratio_is_off():
    experiment = running(guardrails=[], auto_stop=False, ramp=[{"coverage": 0.1}, {"coverage": 0.5, "hold_hours": 0}])
    users = {"control": 6_000, "treatment": 4_000}
    outcome = look(experiment, users, {}, MonitorState(), now_ms=HOUR_MS)
    assert outcome.action == ""
    assert "sample-ratio mismatch" in outcome.state.gate


def test_paused_and_stopped_experiments_are_not_looked_at():
    paused = lifecycle.pause(running(), now_ms=1)
    outcome = look(paused, {"control": 6_000, "treatment": 4_000}, {}, MonitorState(), now_ms=HOUR_MS)
    assert outcome == type(outcome)(MonitorState())


def test_the_state_survives_its_json_form():
    experiment = running(planned_days=2)
    traffic = Traffic(np.random.default_rng(6), rates(0.1, 0.11, 0.2, 0.19), {"control": 0.5, "treatment": 0.5})
    state = MonitorState()
    for hour in range(1, 30):
        traffic.add(300)
        users, sums = traffic.snapshot()
        state = look(experiment, users, sums, state, now_ms=hour * HOUR_MS).state
    assert state.primary and state.guardrails
    assert MonitorState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_the_timeline_is_the_fixed_horizon_comparison_at_each_point():
    spec = running().spec
    users = {"control": 1_000, "treatment": 1_100}
    sums = {"control": {"click_conversion": (100.0, 100.0)}, "treatment": {"click_conversion": (132.0, 132.0)}}
    points = effect_timeline(spec, [(5, users, sums), (6, {"control": 3, "treatment": 3}, {})])
    assert [(p.at_ms, p.metric) for p in points] == [
        (5, "click_conversion"), (5, "purchase_conversion"), (6, "click_conversion"), (6, "purchase_conversion"),
    ]  # fmt: skip
    expected = compare_proportions(Moments(1_000, 100, 100), Moments(1_100, 132, 132), alpha=spec.alpha)
    assert points[0].comparison is not None
    assert points[0].comparison.relative == pytest.approx(expected.relative, rel=1e-12)
    assert points[0].comparison.relative_ci_low == pytest.approx(expected.relative_ci_low, rel=1e-12)
    assert points[1].comparison is None and points[2].comparison is None  # no variance; too few users


def test_re_weighting_suspends_the_sample_ratio_test_instead_of_stopping() -> None:
    experiment = running(guardrails=[])
    users = {"control": 5_000, "treatment": 5_000}
    state = look(experiment, users, {}, MonitorState(), now_ms=60_000).state
    assert state.srm_shares == {"control": 0.5, "treatment": 0.5} and not state.srm
    reweighted = lifecycle.update(
        experiment,
        spec_from_dict("e", {"variants": {"control": 1, "treatment": 3}, "primary_metric": {"source": "click"}}),
        np.zeros(BUCKETS, dtype=bool),
        now_ms=120_000,
    )
    outcome = look(reweighted, {"control": 5_100, "treatment": 5_300}, {}, state, now_ms=180_000)
    assert outcome.action == "" and outcome.state.srm_suspended and not outcome.state.srm
    # Suspended for good: even a wild split no longer stops it.
    later = look(reweighted, {"control": 9_000, "treatment": 5_300}, {}, outcome.state, now_ms=240_000)
    assert later.action == "" and later.state.srm_suspended


@pytest.mark.parametrize("alternative", ["less", "greater"])
def test_the_averaged_guardrail_test_agrees_with_its_components(alternative: str) -> None:
    """One scale: the same p-value and bound as MixtureSPRT; several: the average's evidence, a bound
    where it reaches 1/alpha."""
    from rewardloop.learning.experiments.always_valid import AlwaysValidState, MixtureSPRT
    from rewardloop.learning.experiments.monitor import _averaged_update, _log_ratio

    sign = -1 if alternative == "less" else 1
    single = [MixtureSPRT(tau=0.02, alpha=0.05, alternative=alternative, null=0.0)]
    state = AlwaysValidState()
    reference = AlwaysValidState()
    for estimate in (sign * 0.01, sign * 0.03, sign * 0.05):
        state = _averaged_update(single, state, estimate, 1e-4)
        reference = single[0].update(reference, estimate, 1e-4)
        assert state.p_value == pytest.approx(reference.p_value, rel=1e-9)
        assert (state.low, state.high) == pytest.approx((reference.low, reference.high), rel=1e-7)
    several = [MixtureSPRT(tau=t, alpha=0.05, alternative=alternative) for t in (0.01, 0.05, 0.2)]
    logs = [float(t.log_likelihood_ratio(sign * 0.05, 1e-4)) for t in several]
    assert _log_ratio(several, sign * 0.05, 1e-4, 0.0) == pytest.approx(np.log(np.mean(np.exp(logs))), rel=1e-9)
    ended = _averaged_update(several, AlwaysValidState(), sign * 0.05, 1e-4)
    edge = ended.high if alternative == "less" else ended.low
    assert _log_ratio(several, sign * 0.05, 1e-4, edge) == pytest.approx(np.log(20), abs=1e-6)


def _cuped_traffic(rng: np.random.Generator, effect: float, hours: int, per_hour: int) -> list[tuple[dict, dict, dict]]:
    """Hourly cumulative sums of a primary ``y = x + noise (+ effect)`` whose pre-exposure value ``x``
    varies far more than the noise: CUPED removes ~94% of y's variance."""
    users = {"control": 0, "treatment": 0}
    sums = {v: [0.0, 0.0] for v in users}
    xs = {v: [0.0, 0.0, 0.0] for v in users}
    out = []
    for _ in range(hours):
        for variant in users:
            x = rng.normal(5.0, 2.0, per_hour)
            y = x + rng.normal(0.0, 0.5, per_hour) + (effect if variant == "treatment" else 0.0)
            users[variant] += per_hour
            sums[variant] = [sums[variant][0] + y.sum(), sums[variant][1] + (y * y).sum()]
            xs[variant] = [xs[variant][0] + x.sum(), xs[variant][1] + (x * x).sum(), xs[variant][2] + (x * y).sum()]
        out.append((
            dict(users),
            {v: {"click_sum": (s[0], s[1])} for v, s in sums.items()},
            {v: {"click_sum": (c[0], c[1], c[2])} for v, c in xs.items()},
        ))  # fmt: skip
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_primary_looks_use_cuped_when_covariates_are_kept(seed: int) -> None:
    """The same traffic, with and without its covariates: adjusted, the first daily look decides
    (z ~ 7 against a boundary ~4); unadjusted, it cannot (z ~ 1.7)."""
    experiment = running(planned_days=7, guardrails=[], mde=0.1, mde_relative=False,
                         primary_metric={"source": "click", "aggregate": "sum"})  # fmt: skip
    hours = _cuped_traffic(np.random.default_rng(seed), effect=0.1, hours=24, per_hour=100)
    adjusted, plain = MonitorState(), MonitorState()
    for hour, (users, sums, covariates) in enumerate(hours, start=1):
        adjusted = look(experiment, users, sums, adjusted, hour * HOUR_MS, covariates).state
        plain = look(experiment, users, sums, plain, hour * HOUR_MS).state
    assert adjusted.looks_taken == plain.looks_taken == 1
    assert adjusted.primary["treatment"].verdict == "better" and adjusted.primary["treatment"].decided_look == 1
    assert plain.primary["treatment"].verdict == "continue"
    assert adjusted.primary["treatment"].z[0] > 3 * plain.primary["treatment"].z[0]


def test_a_a_cuped_looks_rarely_decide() -> None:
    """No effect: the adjusted looks (7 daily) decide in at most ~alpha of experiments."""
    experiment = running(planned_days=7, guardrails=[], mde=0.1, mde_relative=False,
                         primary_metric={"source": "click", "aggregate": "sum"})  # fmt: skip
    rng = np.random.default_rng(11)
    decided = 0
    runs = 200
    for _ in range(runs):
        state = MonitorState()
        for day, (users, sums, covariates) in enumerate(_cuped_traffic(rng, 0.0, 7, 300), start=1):
            state = look(experiment, users, sums, state, day * 24 * HOUR_MS, covariates).state
        decided += state.primary["treatment"].verdict in ("better", "worse")
    # alpha 0.05: 10 expected in 200; 20 is ~3 binomial sds above it.
    assert decided <= 20, decided
