"""Sequential tests (learning/experiments): group-sequential boundaries against published values
and a multivariate normal oracle, the mixture SPRT against numerical integration, the SRM test's
Bayes factor against scipy's beta- and Dirichlet-multinomial, state round trips, bad inputs."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import integrate, special, stats

from rewardloop.learning.experiments import sequential
from rewardloop.learning.experiments.always_valid import AlwaysValidState, MixtureSPRT, SampleRatioTest
from rewardloop.learning.experiments.sequential import GroupSequential, inflation_factor
from rewardloop.learning.experiments.simulation import srm_study
from rewardloop.learning.params import ConfigError

EQUAL_5 = [0.2, 0.4, 0.6, 0.8, 1.0]


def _correlation(fractions: np.ndarray) -> np.ndarray:
    """z's of a Brownian motion observed at information fractions: corr = sqrt(t_i / t_j), i <= j."""
    return np.sqrt(np.minimum.outer(fractions, fractions) / np.maximum.outer(fractions, fractions))


def _mvn_exit(fractions: np.ndarray, bounds: np.ndarray, drift: float, look: int, side: str) -> float:
    """P(|z_j| < c_j for j < look, and z_look beyond c_look on ``side``) by scipy's mvn cdf."""
    k = look + 1
    mvn = stats.multivariate_normal(mean=drift * np.sqrt(fractions[:k]), cov=_correlation(fractions)[:k, :k])
    low, high = -bounds[:k].copy(), bounds[:k].copy()  # "stay": no exit up to and including look
    if side == "upper":
        low[look], high[look] = bounds[look], np.inf
    elif side == "lower":
        low[look], high[look] = -np.inf, -bounds[look]
    return float(mvn.cdf(high, lower_limit=low))


# --- group-sequential boundaries ----------------------------------------------------------


def test_obrien_fleming_boundaries_match_published_values() -> None:
    # gsDesign sfLDOF / ldbounds, alpha 0.025 per side, 5 equally spaced looks (Jennison & Turnbull).
    published = [4.877, 3.357, 2.680, 2.290, 2.031]
    np.testing.assert_allclose(GroupSequential(0.05).boundary(EQUAL_5), published, atol=6e-4)


def test_pocock_type_boundaries_match_published_values() -> None:
    # ldbounds, Pocock-type spending alpha log(1 + (e - 1) t), 5 looks: 2.4380 2.4268 2.4101 2.3966
    # 2.3860. (2.391, sometimes quoted for the last, spends only 0.04986: checked with scipy's mvn.)
    published = [2.438, 2.427, 2.410, 2.397, 2.386]
    np.testing.assert_allclose(GroupSequential(0.05, "pocock").boundary(EQUAL_5), published, atol=6e-4)


@pytest.mark.parametrize("spending", ["obrien_fleming", "pocock"])
@pytest.mark.parametrize("fractions", [[0.5, 1.0], [0.15, 0.45, 0.7], [0.1, 0.35, 0.6, 1.0]])
def test_null_exits_match_the_multivariate_normal_oracle(spending: str, fractions: list[float]) -> None:
    design = GroupSequential(0.05, spending)
    t = np.array(fractions)
    bounds = design.boundary(fractions)
    upper, lower = design.exit_probabilities(fractions)
    np.testing.assert_allclose(upper, lower, rtol=1e-12)  # symmetric under the null
    for k in range(t.size):
        crossed_by_k = 1.0 - _mvn_exit(t, bounds, 0.0, k, "stay")
        assert crossed_by_k == pytest.approx(design.spent(t[k]), abs=2e-5)
        assert np.sum(upper[: k + 1] + lower[: k + 1]) == pytest.approx(design.spent(t[k]), abs=1e-9)


@pytest.mark.parametrize("drift", [1.5, 2.8, -2.0])
def test_exit_probabilities_under_a_drift_match_the_oracle(drift: float) -> None:
    design = GroupSequential(0.05)
    t = np.array([0.25, 0.5, 0.8, 1.0])
    bounds = design.boundary(t)
    upper, lower = design.exit_probabilities(t, drift)
    for k in range(t.size):
        assert upper[k] == pytest.approx(_mvn_exit(t, bounds, drift, k, "upper"), abs=2e-5)
        assert lower[k] == pytest.approx(_mvn_exit(t, bounds, drift, k, "lower"), abs=2e-5)


def test_a_looks_boundary_never_changes_when_later_looks_come() -> None:
    design = GroupSequential(0.05)
    two = design.boundary([0.3, 0.5])
    sequential._boundaries.cache_clear()  # recomputed, not just cached
    three = design.boundary([0.3, 0.5, 0.55])
    four = design.boundary([0.3, 0.5, 0.55, 1.0])
    assert np.array_equal(three[:2], two)
    assert np.array_equal(four[:3], three)


def test_closely_spaced_unplanned_looks_stay_accurate() -> None:
    t = np.array([0.3, 0.301, 0.6])
    design = GroupSequential(0.05)
    bounds = design.boundary(t)
    assert 1.0 - _mvn_exit(t, bounds, 0.0, 2, "stay") == pytest.approx(design.spent(0.6), abs=2e-5)


def test_the_final_look_spends_all_that_is_left() -> None:
    design = GroupSequential(0.05)
    stopped_short = [0.3, 0.6, 0.9]
    upper, lower = design.exit_probabilities(stopped_short, final=True)
    assert float(np.sum(upper + lower)) == pytest.approx(0.05, abs=1e-9)
    assert design.boundary(stopped_short, final=True)[-1] < design.boundary(stopped_short)[-1]
    # information beyond the plan: spending capped at 1, the true correlation kept
    overrun = np.array([0.5, 1.3])
    bounds = design.boundary(overrun)
    assert 1.0 - _mvn_exit(overrun, bounds, 0.0, 1, "stay") == pytest.approx(0.05, abs=2e-5)
    assert bounds[-1] > design.boundary([0.5, 1.0])[-1]
    with pytest.raises(ConfigError, match=r"fractions\[2\] follows the final look"):
        design.boundary([0.5, 1.0, 1.1])


def test_an_early_look_with_no_alpha_to_spend_cannot_reject() -> None:
    bounds = GroupSequential(0.05).boundary([0.001, 0.5, 1.0])
    assert bounds[0] == math.inf
    assert not GroupSequential(0.05).decide([30.0, 0.0, 0.0], [0.001, 0.5, 1.0]).decided


def test_decide_reports_the_first_crossing() -> None:
    design = GroupSequential(0.05)
    assert design.decide([1.0, 3.5, 4.0], [0.2, 0.4, 0.6]) == (True, 1)
    assert design.decide([-1.0, -3.5], [0.2, 0.4]) == (True, 1)
    assert design.decide([1.0, 2.0], [0.2, 0.4]) == (False, None)
    decided, look = design.decide([2.1], [1.0])
    assert decided and look == 0


# --- inflation factor ----------------------------------------------------------------------


def test_inflation_factor_keeps_the_power() -> None:
    alpha, power = 0.05, 0.8
    fixed = special.ndtri(1 - alpha / 2) + special.ndtri(power)
    factors = [inflation_factor(alpha, power, looks=k) for k in (1, 5, 7, 14)]
    assert factors[0] == pytest.approx(1.0, abs=1e-9)
    assert all(1.02 <= f <= 1.1 for f in factors[1:])
    assert factors == sorted(factors)  # more looks, more sample
    assert inflation_factor(alpha, power, "pocock", looks=5) > 1.15  # Pocock pays for early stops
    # independent check: at the inflated drift, the oracle's upper exits sum to the power
    t = np.array([0.25, 0.5, 0.75, 1.0])
    drift = fixed * math.sqrt(inflation_factor(alpha, power, looks=4))
    bounds = GroupSequential(alpha).boundary(t)
    assert sum(_mvn_exit(t, bounds, drift, k, "upper") for k in range(4)) == pytest.approx(power, abs=5e-5)


# --- mixture SPRT --------------------------------------------------------------------------


def _mixture_oracle(x: float, v: float, tau: float, alternative: str) -> float:
    """Lambda by quadrature: the normal likelihood ratio of null + u against null, mixed over u."""

    def ratio(u: float) -> float:
        return math.exp((x * u - u * u / 2) / v) * stats.norm.pdf(u, scale=tau)

    if alternative == "two-sided":
        return integrate.quad(ratio, -np.inf, np.inf, epsabs=0, epsrel=1e-10)[0]
    low, high = (-np.inf, 0.0) if alternative == "less" else (0.0, np.inf)
    return 2.0 * integrate.quad(ratio, low, high, epsabs=0, epsrel=1e-10)[0]


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
@pytest.mark.parametrize(("x", "v"), [(0.3, 0.04), (-0.5, 0.01), (0.0, 1.0), (-0.05, 0.001)])
def test_mixture_likelihood_ratio_matches_quadrature(alternative: str, x: float, v: float) -> None:
    test = MixtureSPRT(tau=0.2, alternative=alternative, null=0.1)
    llr = float(test.log_likelihood_ratio(x + 0.1, v))
    assert llr == pytest.approx(math.log(_mixture_oracle(x, v, 0.2, alternative)), abs=1e-7)


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_confidence_bounds_are_where_the_ratio_reaches_one_over_alpha(alternative: str) -> None:
    test = MixtureSPRT(tau=0.1, alpha=0.05, alternative=alternative)
    estimate, variance = 0.02, 0.03**2
    low, high = (float(b) for b in test.confidence_bounds(estimate, variance))
    for end in (low, high):
        if math.isfinite(end):  # the test of theta = end sits exactly on its rejection boundary
            shifted = MixtureSPRT(tau=0.1, alpha=0.05, alternative=alternative, null=end)
            assert float(shifted.log_likelihood_ratio(estimate, variance)) == pytest.approx(math.log(20), abs=1e-9)
    assert (math.isinf(low), math.isinf(high)) == {
        "two-sided": (False, False),
        "less": (True, False),
        "greater": (False, True),
    }[alternative]


def test_p_value_never_increases_and_the_sequence_only_narrows() -> None:
    rng = np.random.default_rng(7)
    test = MixtureSPRT(tau=0.05, alternative="less", null=-0.01)
    state = AlwaysValidState()
    sums = np.zeros(2)
    for n in range(100, 5_000, 100):
        sums += rng.normal([0.0, -0.02], 1.0, size=(100, 2)).sum(axis=0)
        new = test.update(state, float(sums[1] - sums[0]) / n, 2.0 / n)
        assert new.p_value <= state.p_value and new.high <= state.high and new.looks == state.looks + 1
        state = new
    assert state.rejected(test.alpha) == (state.high < test.null)


def test_a_look_without_spread_carries_no_evidence() -> None:
    state = AlwaysValidState(p_value=0.3, low=-1.0, high=2.0, looks=4)
    assert MixtureSPRT(tau=1.0).update(state, 0.5, 0.0) is state


def test_state_round_trips_through_json() -> None:
    for state in (
        AlwaysValidState(),
        AlwaysValidState(p_value=0.012, low=-0.3, high=math.inf, looks=17),
        MixtureSPRT(tau=0.1).update(AlwaysValidState(), 0.2, 0.01),
    ):
        assert AlwaysValidState.from_dict(json.loads(json.dumps(state.to_dict(), allow_nan=False))) == state


# --- sequential SRM --------------------------------------------------------------------------


def test_srm_bayes_factor_matches_beta_and_dirichlet_multinomial() -> None:
    two = SampleRatioTest((0.3, 0.7), concentration=50.0)
    counts = np.array([41, 59])
    oracle = stats.betabinom.logpmf(41, 100, 15.0, 35.0) - stats.binom.logpmf(41, 100, 0.3)
    assert float(two.log_bayes_factor(counts)) == pytest.approx(oracle, abs=1e-10)
    three = SampleRatioTest((1, 2, 1))
    counts = np.array([30, 40, 35])
    oracle = stats.dirichlet_multinomial.logpmf(counts, [25.0, 50.0, 25.0], 105) - stats.multinomial.logpmf(
        counts, 105, [0.25, 0.5, 0.25]
    )
    assert float(three.log_bayes_factor(counts)) == pytest.approx(oracle, abs=1e-9)


def test_srm_is_stable_at_a_hundred_million_assignments() -> None:
    import mpmath  # always there: torch needs sympy, sympy needs mpmath

    mpmath.mp.dps = 40
    srm = SampleRatioTest((1, 1))
    for counts in ([50_000_000, 50_000_000], [50_004_000, 49_996_000], [50_050_000, 49_950_000]):
        a = [mpmath.mpf(50)] * 2
        exact = (
            mpmath.loggamma(100)
            - mpmath.loggamma(100 + sum(counts))
            + sum(mpmath.loggamma(ai + c) - mpmath.loggamma(ai) for ai, c in zip(a, counts, strict=True))
            - sum(counts) * mpmath.log(mpmath.mpf(0.5))
        )
        assert float(srm.log_bayes_factor(counts)) == pytest.approx(float(exact), abs=1e-5)
    assert srm.p_value([50_050_000, 49_950_000]) < srm.alpha < srm.p_value([50_004_000, 49_996_000])


def test_srm_flags_a_52_48_split_and_not_a_true_50_50() -> None:
    srm = SampleRatioTest((1, 1))  # alpha 0.001
    assert srm.p_value([10_400, 9_600]) < srm.alpha  # 52/48 at 20,000 assignments
    assert srm.p_value([10_050, 9_950]) == 1.0
    assert srm.p_value([10_050, 9_950], previous=0.2) == 0.2  # the running minimum is kept


@pytest.mark.parametrize("seed", [1, 2])
def test_srm_under_continuous_checks_seeded(seed: int) -> None:
    # 2,000 experiments x 400 checks, one per 100 assignments.
    kwargs = {"users_per_look": 100, "looks": 400, "experiments": 2_000, "seed": seed}
    alpha = 0.05  # a loose level, so that a broken test would show in the false-alarm rate
    alarms, _ = srm_study(SampleRatioTest((1, 1), alpha=alpha), share=0.5, **kwargs)
    assert alarms.rate <= alpha + 2 * math.sqrt(alpha * (1 - alpha) / alarms.trials)
    found, users = srm_study(SampleRatioTest((1, 1)), share=0.52, **kwargs)
    assert found.rate == 1.0 and users < 20_000  # at the default alpha 0.001


# --- bad inputs ------------------------------------------------------------------------------

BAD = [
    (lambda: GroupSequential(alpha=1.2), r"alpha must be in \(0, 1\), got 1.2"),
    (lambda: GroupSequential(spending="linear"), r"spending must be one of obrien_fleming, pocock, got 'linear'"),
    (lambda: GroupSequential().boundary([]), r"fractions must hold 1 to 1000 looks, got 0"),
    (lambda: GroupSequential().boundary([0.5, 0.4]), r"fractions must be strictly increasing: fractions\[1\]"),
    (lambda: GroupSequential().boundary([0.0, 0.5]), r"fractions\[0\] must be a finite number > 0, got 0.0"),
    (lambda: GroupSequential().boundary([0.5, math.nan]), r"fractions\[1\] must be a finite number > 0"),
    (lambda: GroupSequential().decide([1.0], [0.5, 1.0]), r"z_history must hold one z per fraction \(2\)"),
    (lambda: GroupSequential().decide([math.inf], [0.5]), r"z_history must be finite"),
    (lambda: inflation_factor(0.05, 1.0, looks=5), r"power must be in \(0.025, 1\), got 1.0"),
    (lambda: inflation_factor(0.05, 0.8, looks=0), r"looks must be in \[1, 1000\], got 0"),
    (lambda: MixtureSPRT(tau=0.0), r"tau must be > 0, got 0.0"),
    (lambda: MixtureSPRT(tau=1.0, alternative="worse"), r"alternative must be one of two-sided, less, greater"),
    (lambda: MixtureSPRT(tau=1.0, null=math.inf), r"null must be finite"),
    (lambda: MixtureSPRT(tau=1.0).update(AlwaysValidState(), math.nan, 1.0), r"estimate must be finite"),
    (lambda: MixtureSPRT(tau=1.0).update(AlwaysValidState(), 0.1, -1.0), r"variance must be in \[0, inf\]"),
    (lambda: AlwaysValidState(p_value=1.5), r"p_value must be in \[0, 1\], got 1.5"),
    (lambda: AlwaysValidState(looks=-1), r"looks must be an integer >= 0, got -1"),
    (lambda: AlwaysValidState.from_dict({"p": 0.1}), r"always_valid_state: unknown key\(s\) p"),
    (lambda: SampleRatioTest((1.0,)), r"weights must hold 2 to 1000 variants, got 1"),
    (lambda: SampleRatioTest((1.0, 0.0)), r"weights\[1\] must be > 0, got 0.0"),
    (lambda: SampleRatioTest((1, 1)).p_value([5, -1]), r"counts must be finite numbers >= 0"),
    (lambda: SampleRatioTest((1, 1)).p_value([1, 2, 3]), r"counts must hold one count per variant \(2\)"),
]


@pytest.mark.parametrize(("make", "message"), BAD)
def test_bad_inputs_name_the_parameter(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()
