"""The fixed-horizon engine against scipy and statsmodels (the oracles), on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats import proportion as smp
from statsmodels.stats._delta_method import NonlinearDeltaCov
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from rewardloop.learning.experiments.moments import Moments
from rewardloop.learning.experiments.stats import at_level, compare_means, compare_proportions, cuped_adjustment
from rewardloop.learning.params import ConfigError

TOL = {"rel": 1e-6, "abs": 1e-9}


def _samples(seed: int, n_c: int, n_t: int, shift: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.gamma(2.0, 3.0, n_c), rng.gamma(2.0, 3.0, n_t) * scale + shift


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n_c=st.integers(3, 400),
    n_t=st.integers(3, 400),
    shift=st.floats(-3, 3),
    scale=st.floats(0.2, 5),
    alpha=st.floats(0.001, 0.3),
    alternative=st.sampled_from(["two-sided", "greater", "less"]),
)
def test_welch_agrees_with_scipy_and_statsmodels(
    seed: int, n_c: int, n_t: int, shift: float, scale: float, alpha: float, alternative: str
) -> None:
    y_c, y_t = _samples(seed, n_c, n_t, shift, scale)
    ours = compare_means(Moments.of(y_c), Moments.of(y_t), alpha=alpha, alternative=alternative)
    theirs = sps.ttest_ind(y_t, y_c, equal_var=False, alternative=alternative)
    assert ours.p_value == pytest.approx(theirs.pvalue, **TOL)
    assert ours.statistic == pytest.approx(theirs.statistic, **TOL)
    smalt = {"two-sided": "two-sided", "greater": "larger", "less": "smaller"}[alternative]
    low, high = CompareMeans(DescrStatsW(y_t), DescrStatsW(y_c)).tconfint_diff(alpha, smalt, usevar="unequal")
    for a, b in ((ours.ci_low, low), (ours.ci_high, high)):
        assert a == pytest.approx(b, **TOL) or (math.isinf(a) and math.isinf(b))


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n_c=st.integers(20, 5000),
    n_t=st.integers(20, 5000),
    p_c=st.floats(0.02, 0.98),
    p_t=st.floats(0.02, 0.98),
    alpha=st.floats(0.001, 0.3),
)
def test_two_proportions_agree_with_statsmodels_wald(
    seed: int, n_c: int, n_t: int, p_c: float, p_t: float, alpha: float
) -> None:
    rng = np.random.default_rng(seed)
    c, t = int(rng.binomial(n_c, p_c)), int(rng.binomial(n_t, p_t))
    if c in (0, n_c) or t in (0, n_t):
        return  # a variance of 0: the Wald test is undefined (and so is statsmodels')
    control, treatment = Moments(n_c, c, c), Moments(n_t, t, t)
    ours = compare_proportions(control, treatment, alpha=alpha)
    test = smp.test_proportions_2indep(t, n_t, c, n_c, method="wald", compare="diff")
    low, high = smp.confint_proportions_2indep(t, n_t, c, n_c, method="wald", compare="diff", alpha=alpha)
    assert ours.p_value == pytest.approx(test.pvalue, **TOL)
    assert (ours.ci_low, ours.ci_high) == pytest.approx((low, high), **TOL)
    # p and interval come from one variance: a rejection is exactly an interval without 0.
    assert (ours.p_value <= alpha) == (ours.ci_low > 0 or ours.ci_high < 0)


@settings(max_examples=40, derandomize=True, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(30, 2000), lift=st.floats(-0.5, 0.5))
def test_relative_interval_is_the_delta_method(seed: int, n: int, lift: float) -> None:
    y_c, y_t = _samples(seed, n, n + 7, 0.0, 1.0 + lift)
    ours = compare_means(Moments.of(y_c), Moments.of(y_t))
    means = np.array([y_t.mean(), y_c.mean()])
    cov = np.diag([y_t.var(ddof=1) / y_t.size, y_c.var(ddof=1) / y_c.size])
    delta = NonlinearDeltaCov(lambda p: np.array([p[0] / p[1] - 1]), means, cov)
    assert ours.relative == pytest.approx(float(delta.predicted()[0]), **TOL)
    assert ours.relative_se == pytest.approx(float(delta.se_vectorized()[0]), rel=1e-5)
    z = sps.norm.isf(0.025)
    assert ours.relative_ci_low == pytest.approx(ours.relative - z * ours.relative_se, **TOL)


def test_cuped_matches_ancova_and_removes_rho_squared() -> None:
    rng = np.random.default_rng(7)
    rho, n, reps = 0.7, 400, 400
    plain, adjusted, reductions = [], [], []
    for _ in range(reps):
        x = rng.normal(size=2 * n)
        y = rho * x + math.sqrt(1 - rho**2) * rng.normal(size=2 * n) + np.r_[np.zeros(n), np.full(n, 0.1)]
        control, treatment = Moments.of(y[:n], x[:n]), Moments.of(y[n:], x[n:])
        result = compare_means(control, treatment, cuped=True)
        plain.append(compare_means(control, treatment).estimate)
        adjusted.append(result.estimate)
        reductions.append(result.variance_reduction)
    # The point estimate is OLS's treatment coefficient in y ~ treatment + x (the last replication).
    design = sm.add_constant(np.column_stack([np.r_[np.zeros(n), np.ones(n)], x]))
    assert result.estimate == pytest.approx(sm.OLS(y, design).fit().params[1], **TOL)
    assert cuped_adjustment(control, treatment).correlation == pytest.approx(rho, abs=0.06)
    # Over replications: the estimator's variance shrinks by 1 - rho^2, as reported.
    ratio = np.var(adjusted) / np.var(plain)
    assert ratio == pytest.approx(1 - rho**2, abs=0.08)
    assert np.mean(reductions) == pytest.approx(rho**2, abs=0.03)


def test_at_level_rescales_only_the_intervals() -> None:
    y_c, y_t = _samples(3, 50, 60, 1.0, 1.0)
    base = compare_means(Moments.of(y_c), Moments.of(y_t))
    wider = at_level(base, 0.01)
    assert (wider.p_value, wider.estimate) == (base.p_value, base.estimate)
    assert wider.ci_low < base.ci_low and wider.ci_high > base.ci_high
    assert wider.significant == (base.p_value <= 0.01)


BAD = [
    (lambda: compare_means(Moments.of([1.0]), Moments.of([1.0, 2.0])), "control must have n >= 2"),
    (lambda: compare_means(Moments.of([1.0, 2]), Moments.of([1.0, 2.0]), alpha=1.5), "alpha must be in"),
    (lambda: compare_means(Moments.of([1.0, 2]), Moments.of([1.0, 2.0]), alternative="up"), "alternative must be"),
    (lambda: compare_proportions(Moments.of([0.5, 2.0]), Moments.of([0.0, 1.0])), "control must hold a binary"),
    (lambda: cuped_adjustment(Moments.of([1.0, 2]), Moments.of([1.0, 2.0])), "cuped needs pre-experiment"),
]


@pytest.mark.parametrize(("call", "message"), BAD)
def test_bad_inputs_name_the_parameter(call: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()  # type: ignore[operator]
