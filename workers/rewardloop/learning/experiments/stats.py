"""Fixed-horizon comparison of a treatment variant against control, from the variants' ``Moments``.

``compare_means`` is Welch's t-test (no equal-variance assumption: variants that change a metric
usually change its spread too); ``compare_proportions`` is the unpooled Wald z-test of a binary
metric, whose p-value and interval come from the same variance so a test rejects exactly when
its interval excludes 0 (the pooled z-test's p-value is reported beside it). Both report the
relative lift ``treatment / control - 1`` with a delta-method interval, and a standardised
effect size. ``cuped_adjustment`` (or ``compare_means(..., cuped=True)``) removes the part of
the metric a user's pre-experiment value predicts (Deng et al., WSDM 2013), shrinking the
variance by the squared correlation. ``at_level`` recomputes a comparison's intervals at
another level: the one ``multiple_testing.adjust`` assigns it, for intervals that agree with
the adjusted decisions.

Conventions:

- ``estimate`` is treatment minus control; ``alternative`` is scipy's: ``"greater"`` means the
  treatment mean is larger. One-sided intervals are half-lines.
- The relative interval uses the normal critical value, also for means: the delta method is
  itself a large-sample approximation, and no degrees of freedom belong to a ratio of two means.
  The decision is the absolute test's; in a tight call the relative interval may disagree.
- CUPED's slope ``theta`` is the pooled within-variant regression slope of ``y`` on ``x``, so the
  adjusted difference equals the treatment coefficient of the OLS fit ``y ~ treatment + x``; ``x``
  is centred on its mean over both variants, so adjusted means stay on the metric's scale.
  ``theta`` is treated as known (its estimation error is of order 1/n).
- Two variants with zero variance: the difference is then certain, so p is 1 if it is 0, else 0.

>>> control = Moments.of([3.0, 5.0, 4.0, 6.0, 2.0])
>>> treatment = Moments.of([5.0, 7.0, 6.0, 4.0, 8.0])
>>> result = compare_means(control, treatment)
>>> result.estimate, round(result.p_value, 4), (round(result.ci_low, 3), round(result.ci_high, 3))
(2.0, 0.0805, (-0.306, 4.306))
>>> round(result.relative, 3), result.significant
(0.5, False)
>>> round(at_level(result, 0.2).ci_low, 3)
0.603
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from scipy import special, stats

from rewardloop.learning.experiments.moments import Moments
from rewardloop.learning.params import ConfigError, in_interval

ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class Comparison:
    """Treatment against control on one metric; the API returns ``to_dict()``."""

    metric: str
    """``"mean"`` (Welch t-test) or ``"proportion"`` (Wald z-test)."""
    estimate: float
    """Treatment mean minus control mean (CUPED-adjusted if ``cuped``)."""
    se: float
    """Standard error of ``estimate``."""
    df: float
    """Degrees of freedom of the test statistic: Welch-Satterthwaite, or inf for a z-test."""
    statistic: float
    """``estimate / se``."""
    p_value: float
    ci_low: float
    ci_high: float
    control_mean: float
    treatment_mean: float
    relative: float
    """Relative lift ``treatment_mean / control_mean - 1``; nan if the control mean is 0."""
    relative_se: float
    relative_ci_low: float
    relative_ci_high: float
    effect_size: float
    """Cohen's d: ``estimate`` over the pooled standard deviation of the (unadjusted) metric."""
    hedges_g: float
    """Cohen's d times the small-sample bias correction J(n_control + n_treatment - 2)."""
    alpha: float
    """The intervals have confidence 1 - alpha."""
    alternative: str
    n_control: float
    n_treatment: float
    pooled_p_value: float = math.nan
    """Proportions: p-value of the pooled z-test (the classic two-proportion test); nan for means."""
    cuped: bool = False
    theta: float = 0.0
    """CUPED's slope; 0 without CUPED."""
    variance_reduction: float = 0.0
    """CUPED: share of the plain estimate's variance removed, ``1 - se**2 / se_plain**2``."""

    @property
    def significant(self) -> bool:
        """``p_value <= alpha``: after ``at_level(c, level)`` with ``adjust``'s level, the adjusted decision."""
        return self.p_value <= self.alpha

    def to_dict(self) -> dict[str, float | str | bool]:
        return {**dataclasses.asdict(self), "significant": self.significant}


@dataclass(frozen=True)
class CupedAdjustment:
    """The variants' moments of ``y - theta * (x - mean of x over both variants)``."""

    theta: float
    control: Moments
    treatment: Moments
    correlation: float
    """Pooled within-variant correlation of ``x`` and ``y``; CUPED removes about its square."""


def compare_means(
    control: Moments,
    treatment: Moments,
    *,
    alpha: float = 0.05,
    alternative: str = "two-sided",
    cuped: bool = False,
) -> Comparison:
    """Welch's t-test of the difference in means, optionally on CUPED-adjusted moments."""
    alpha, alternative = _check(control, treatment, alpha, alternative)
    theta = variance_reduction = 0.0
    plain_control, plain_treatment = control, treatment
    if cuped:
        adjustment = cuped_adjustment(control, treatment)
        theta, control, treatment = adjustment.theta, adjustment.control, adjustment.treatment
    v_control, v_treatment = control.variance / control.n, treatment.variance / treatment.n
    se = math.sqrt(v_control + v_treatment)
    if se > 0:
        df = (v_control + v_treatment) ** 2 / (v_control**2 / (control.n - 1) + v_treatment**2 / (treatment.n - 1))
    else:
        df = control.n + treatment.n - 2
    if cuped:
        plain_var = plain_control.variance / plain_control.n + plain_treatment.variance / plain_treatment.n
        variance_reduction = 1.0 - se**2 / plain_var if plain_var > 0 else 0.0
    return _comparison(
        "mean",
        control.mean,
        treatment.mean,
        se,
        df,
        (v_control, v_treatment),
        _effect_sizes(plain_control, plain_treatment, treatment.mean - control.mean),
        alpha=alpha,
        alternative=alternative,
        n=(control.n, treatment.n),
        cuped=cuped,
        theta=theta,
        variance_reduction=variance_reduction,
    )


def compare_proportions(
    control: Moments,
    treatment: Moments,
    *,
    alpha: float = 0.05,
    alternative: str = "two-sided",
) -> Comparison:
    """Wald z-test and interval of the difference of two proportions (``y`` in {0, 1}, so ``sum_y`` counts successes).

    The variance is unpooled, ``p(1-p)/n`` per variant, for the test as for the interval
    (statsmodels' ``test_proportions_2indep`` / ``confint_proportions_2indep`` with
    ``method="wald"``); the pooled z-test's p-value is ``pooled_p_value``.
    """
    alpha, alternative = _check(control, treatment, alpha, alternative)
    for name, moments in (("control", control), ("treatment", treatment)):
        if not 0 <= moments.sum_y <= moments.n or abs(moments.sum_y2 - moments.sum_y) > 1e-9 * moments.n:
            raise ConfigError(
                f"{name} must hold a binary metric (y in {{0, 1}}: 0 <= sum_y <= n and sum_y2 == sum_y), "
                f"got n={moments.n:g}, sum_y={moments.sum_y:g}, sum_y2={moments.sum_y2:g}"
            )
    p_control, p_treatment = control.mean, treatment.mean
    v_control = p_control * (1 - p_control) / control.n
    v_treatment = p_treatment * (1 - p_treatment) / treatment.n
    pooled = (control.sum_y + treatment.sum_y) / (control.n + treatment.n)
    pooled_se = math.sqrt(pooled * (1 - pooled) * (1 / control.n + 1 / treatment.n))
    diff = p_treatment - p_control
    pooled_p = _p_value(_statistic(diff, pooled_se), math.inf, alternative)
    return _comparison(
        "proportion",
        p_control,
        p_treatment,
        math.sqrt(v_control + v_treatment),
        math.inf,
        (v_control, v_treatment),
        _effect_sizes(control, treatment, diff),
        alpha=alpha,
        alternative=alternative,
        n=(control.n, treatment.n),
        pooled_p_value=pooled_p,
    )


def cuped_adjustment(control: Moments, treatment: Moments) -> CupedAdjustment:
    """Moments of the CUPED-adjusted metric, with the pooled within-variant slope ``theta``."""
    for name, moments in (("control", control), ("treatment", treatment)):
        if moments.n < 2:
            raise ConfigError(f"{name} must have n >= 2 users, got {moments.n:g}")
    sxx = (control.n - 1) * control.variance_x + (treatment.n - 1) * treatment.variance_x
    sxy = (control.n - 1) * control.covariance_xy + (treatment.n - 1) * treatment.covariance_xy
    syy = (control.n - 1) * control.variance + (treatment.n - 1) * treatment.variance
    if not sxx > 0:
        raise ConfigError("cuped needs pre-experiment values x that vary within the variants, got variance 0")
    theta = sxy / sxx
    center = (control.sum_x + treatment.sum_x) / (control.n + treatment.n)
    correlation = sxy / math.sqrt(sxx * syy) if syy > 0 else 0.0
    return CupedAdjustment(theta, _adjusted(control, theta, center), _adjusted(treatment, theta, center), correlation)


def cuped_if_varies(control: Moments, treatment: Moments) -> CupedAdjustment | None:
    """CUPED's adjustment when the pre-exposure values vary within the variants; else None (no
    covariates kept, or all alike: nothing to adjust with)."""
    if control.variance_x > 0 or treatment.variance_x > 0:
        return cuped_adjustment(control, treatment)
    return None


def at_level(comparison: Comparison, alpha: float) -> Comparison:
    """``comparison`` with its intervals (absolute and relative) at confidence ``1 - alpha``."""
    alpha = _alpha(alpha)
    ci = _interval(comparison.estimate, comparison.se, _critical(alpha, comparison.alternative, comparison.df),
                   comparison.alternative)  # fmt: skip
    relative_ci = _interval(comparison.relative, comparison.relative_se,
                            _critical(alpha, comparison.alternative, math.inf), comparison.alternative)  # fmt: skip
    return dataclasses.replace(
        comparison,
        alpha=alpha,
        ci_low=ci[0],
        ci_high=ci[1],
        relative_ci_low=relative_ci[0],
        relative_ci_high=relative_ci[1],
    )


# --- shared pieces ---------------------------------------------------------------------------


def _comparison(
    metric: str,
    control_mean: float,
    treatment_mean: float,
    se: float,
    df: float,
    mean_variances: tuple[float, float],
    effect_sizes: tuple[float, float],
    *,
    alpha: float,
    alternative: str,
    n: tuple[float, float],
    **extra: float | bool,
) -> Comparison:
    estimate = treatment_mean - control_mean
    statistic = _statistic(estimate, se)
    relative, relative_se = _relative_lift(control_mean, treatment_mean, *mean_variances)
    comparison = Comparison(
        metric=metric,
        estimate=estimate,
        se=se,
        df=df,
        statistic=statistic,
        p_value=_p_value(statistic, df, alternative),
        ci_low=math.nan,
        ci_high=math.nan,
        control_mean=control_mean,
        treatment_mean=treatment_mean,
        relative=relative,
        relative_se=relative_se,
        relative_ci_low=math.nan,
        relative_ci_high=math.nan,
        effect_size=effect_sizes[0],
        hedges_g=effect_sizes[1],
        alpha=alpha,
        alternative=alternative,
        n_control=n[0],
        n_treatment=n[1],
        **extra,  # type: ignore[arg-type]
    )
    return at_level(comparison, alpha)


def _relative_lift(
    control_mean: float, treatment_mean: float, v_control: float, v_treatment: float
) -> tuple[float, float]:
    """``treatment / control - 1`` and its delta-method standard error (independent means)."""
    if control_mean == 0:
        return math.nan, math.nan
    ratio = treatment_mean / control_mean
    # gradient of t / c at the means: (1 / c, -t / c**2) for (t, c)
    variance = v_treatment / control_mean**2 + ratio**2 * v_control / control_mean**2
    return ratio - 1.0, math.sqrt(variance)


def _effect_sizes(control: Moments, treatment: Moments, estimate: float) -> tuple[float, float]:
    """Cohen's d with the pooled standard deviation, and Hedges' g (exact J)."""
    df = control.n + treatment.n - 2
    pooled_sd = math.sqrt(((control.n - 1) * control.variance + (treatment.n - 1) * treatment.variance) / df)
    if pooled_sd == 0:
        return math.nan, math.nan
    d = estimate / pooled_sd
    # J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2)), ~ 1 - 3 / (4 df - 1) (Hedges 1981)
    j = math.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / math.sqrt(df / 2)
    return d, d * j


def _adjusted(moments: Moments, theta: float, center: float) -> Moments:
    """Moments of ``(y - theta * (x - center), x)``, from the centred moments (no extra cancellation)."""
    n = moments.n
    mean = moments.mean - theta * (moments.mean_x - center)
    variance = moments.variance - 2 * theta * moments.covariance_xy + theta**2 * moments.variance_x
    covariance = moments.covariance_xy - theta * moments.variance_x
    return Moments(
        n=n,
        sum_y=n * mean,
        sum_y2=(n - 1) * max(variance, 0.0) + n * mean**2,
        sum_x=moments.sum_x,
        sum_x2=moments.sum_x2,
        sum_xy=(n - 1) * covariance + n * moments.mean_x * mean,
    )


def _statistic(estimate: float, se: float) -> float:
    if se > 0:
        return estimate / se
    # Both variants constant: the difference is known exactly.
    return 0.0 if estimate == 0 else math.copysign(math.inf, estimate)


def _p_value(statistic: float, df: float, alternative: str) -> float:
    dist = stats.norm() if math.isinf(df) else stats.t(df)
    if alternative == "greater":
        return float(dist.sf(statistic))
    if alternative == "less":
        return float(dist.cdf(statistic))
    return float(min(1.0, 2 * dist.sf(abs(statistic))))


def _critical(alpha: float, alternative: str, df: float) -> float:
    tail = alpha / 2 if alternative == "two-sided" else alpha
    return float(stats.norm.isf(tail) if math.isinf(df) else stats.t.isf(tail, df))


def _interval(estimate: float, se: float, critical: float, alternative: str) -> tuple[float, float]:
    low, high = estimate - critical * se, estimate + critical * se
    if alternative == "greater":
        return low, math.inf
    if alternative == "less":
        return -math.inf, high
    return low, high


def _alpha(alpha: object) -> float:
    return in_interval("alpha", alpha, 0.0, 1.0, open_low=True, open_high=True)


def _check(control: Moments, treatment: Moments, alpha: object, alternative: object) -> tuple[float, str]:
    if alternative not in ALTERNATIVES:
        raise ConfigError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")
    for name, moments in (("control", control), ("treatment", treatment)):
        if not isinstance(moments, Moments):
            raise ConfigError(f"{name} must be Moments, got {type(moments).__name__}")
        if moments.n < 2:
            raise ConfigError(f"{name} must have n >= 2 users, got {moments.n:g}")
    return _alpha(alpha), str(alternative)
