"""An experiment's results from its per-variant sums: every treatment against control on every metric,
the sample-ratio check, and how long the experiment needs at its traffic.

- Binary metrics (``conversion``) use the two-proportion test, the others Welch's; the primary
  metric is two-sided, a guardrail one-sided in its bad direction against its tolerance.
- Multiple testing: Holm over the primary's treatment variants, Holm over the guardrails' (metric,
  variant) pairs; each interval is reported at the level its step of Holm tested it at, so a
  result is significant exactly when its interval excludes the null (`holm_levels`).
- Sample ratio: chi-square of the exposed users against the allocation the buckets give.
- Planning: users per variant for the MDE at alpha and power (normal approximation, the control's
  variance), and the days that takes at the traffic seen so far.

- CUPED: when the users' pre-exposure values of the primary metric vary, the primary is compared
  on ``y - theta (x - mean x)`` (Welch), which removes about the squared correlation of the variance.

This is the fixed-horizon reading; the sequential designs that make repeated looks safe are the
experiment monitor's (`monitor.py`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from scipy import stats as sps

from rewardloop.learning.experiments.moments import Moments
from rewardloop.learning.experiments.spec import ExperimentSpec, Metric
from rewardloop.learning.experiments.stats import (
    Comparison,
    at_level,
    compare_means,
    compare_proportions,
    cuped_if_varies,
)

SRM_ALPHA = 0.001
MIN_USERS = 2


@dataclass(frozen=True)
class MetricResult:
    metric: str
    role: str  # "primary" | "guardrail"
    variant: str
    comparison: Comparison | None  # None: too few users yet
    adjusted_p_value: float
    verdict: str  # primary: better / worse / inconclusive; guardrail: regression / ok / inconclusive
    variance_reduction: float = 0.0  # CUPED's (primary only): 1 - adjusted variance / unadjusted


@dataclass(frozen=True)
class Planning:
    users_per_variant: float  # needed for the MDE (nan: no data to size it from yet)
    users_per_day: float
    days_needed: float
    days_elapsed: float
    feasible: bool
    message: str


@dataclass(frozen=True)
class Results:
    users: dict[str, int]
    expected_shares: dict[str, float]
    srm_p_value: float
    srm_mismatch: bool
    metrics: tuple[MetricResult, ...]
    planning: Planning


def holm_levels(p_values: Sequence[float], alpha: float) -> tuple[list[float], list[float]]:
    """Holm-adjusted p-values, and for each hypothesis the level its interval is drawn at: the level
    Holm tested it at (alpha / (m - i) at step i) for the rejected, the first accepted one's for the rest."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, levels = [1.0] * m, [alpha] * m
    running, accepting = 0.0, None
    for step, i in enumerate(order):
        running = max(running, min(1.0, (m - step) * p_values[i]))
        adjusted[i] = running
        level = alpha / (m - step)
        if accepting is None and p_values[i] > level:
            accepting = level
        levels[i] = level if accepting is None else accepting
    return adjusted, levels


def _compare(metric: Metric, control: Moments, treatment: Moments, alpha: float, alternative: str) -> Comparison:
    if metric.binary:
        return compare_proportions(control, treatment, alpha=alpha, alternative=alternative)
    return compare_means(control, treatment, alpha=alpha, alternative=alternative)


def _guardrail(metric: Metric, control: Moments, treatment: Moments, alpha: float) -> Comparison:
    """One-sided: is the treatment worse than control by more than the tolerance (relative)? The
    tolerance shifts the treatment's sums, so the test and interval are against that margin."""
    margin = metric.tolerance * control.mean
    shift = margin if metric.higher_is_better else -margin
    shifted = Moments(
        treatment.n, treatment.sum_y + shift * treatment.n,
        treatment.sum_y2 + 2 * shift * treatment.sum_y + shift**2 * treatment.n,
    )  # fmt: skip
    worse = "less" if metric.higher_is_better else "greater"
    if metric.binary and margin == 0:
        return compare_proportions(control, treatment, alpha=alpha, alternative=worse)
    return compare_means(control, shifted, alpha=alpha, alternative=worse)


def analyse(
    spec: ExperimentSpec,
    users: Mapping[str, int],
    sums: Mapping[str, Mapping[str, tuple[float, float]]],
    shares: Mapping[str, float],
    days_elapsed: float,
    covariates: Mapping[str, Mapping[str, tuple[float, float, float]]] | None = None,
) -> Results:
    """``users``: exposed users per variant; ``sums``: variant -> metric -> (Σy, Σy²); ``shares``: the
    allocation's split of enrolled users (what SRM expects); ``covariates``: variant -> metric ->
    (Σx, Σx², Σxy) of CUPED's pre-exposure values, which adjust the primary metric when they vary."""
    covariates = covariates or {}
    variants = spec.variant_names
    counts = {v: int(users.get(v, 0)) for v in variants}
    srm_p = _srm(counts, shares)

    def moments(variant: str, metric: Metric) -> Moments:
        sy, syy = sums.get(variant, {}).get(metric.name, (0.0, 0.0))
        sx, sxx, sxy = covariates.get(variant, {}).get(metric.name, (0.0, 0.0, 0.0))
        return Moments(float(counts[variant]), sy, syy, sx, sxx, sxy)

    treatments = [v for v in variants if v != spec.control]
    results: list[MetricResult] = []
    for role, metrics, alternative in (
        ("primary", [spec.primary_metric], "two-sided"),
        ("guardrail", spec.guardrails, ""),
    ):
        pairs = [(m, v) for m in metrics for v in treatments]
        compared: list[Comparison | None] = []
        reductions: list[float] = []
        for metric, variant in pairs:
            control, treatment = moments(spec.control, metric), moments(variant, metric)
            reductions.append(0.0)
            if min(control.n, treatment.n) < MIN_USERS or not _varies(control, treatment):
                compared.append(None)
            elif role == "primary" and (cuped := cuped_if_varies(control, treatment)) is not None:
                compared.append(compare_means(cuped.control, cuped.treatment, alpha=spec.alpha))
                reductions[-1] = cuped.correlation**2
            elif role == "primary":
                compared.append(_compare(metric, control, treatment, spec.alpha, alternative))
            else:
                compared.append(_guardrail(metric, control, treatment, spec.alpha))
        p_values = [c.p_value if c is not None else 1.0 for c in compared]
        adjusted, levels = holm_levels(p_values, spec.alpha)
        for (metric, variant), comparison, p_adj, level, reduction in zip(
            pairs, compared, adjusted, levels, reductions, strict=True
        ):
            if comparison is not None:
                comparison = at_level(comparison, level)
            verdict = _verdict(role, comparison, p_adj, spec.alpha)
            results.append(MetricResult(metric.name, role, variant, comparison, p_adj, verdict, reduction))
    return Results(counts, dict(shares), srm_p, srm_p <= SRM_ALPHA, tuple(results),
                   _planning(spec, counts, moments(spec.control, spec.primary_metric), days_elapsed))  # fmt: skip


def _varies(control: Moments, treatment: Moments) -> bool:
    return (control.variance > 0 or treatment.variance > 0) if min(control.n, treatment.n) >= 2 else False


def _verdict(role: str, comparison: Comparison | None, adjusted_p: float, alpha: float) -> str:
    if comparison is None or adjusted_p > alpha:
        return "inconclusive" if role == "primary" or comparison is None else "ok"
    if role == "guardrail":
        return "regression"
    return "better" if comparison.estimate > 0 else "worse"


def _srm(counts: Mapping[str, int], shares: Mapping[str, float]) -> float:
    total = sum(counts.values())
    expected = [shares.get(v, 0.0) * total for v in counts]
    if total == 0 or any(e <= 0 for e in expected):
        return 1.0
    return float(sps.chisquare(list(counts.values()), expected).pvalue)


def _planning(spec: ExperimentSpec, counts: Mapping[str, int], control: Moments, days: float) -> Planning:
    total = sum(counts.values())
    per_day = total / days if days > 0 else 0.0
    if control.n < MIN_USERS or not control.variance > 0:
        return Planning(math.nan, per_day, math.nan, days, True, "too few users to size the experiment yet")
    smallest = min(c / total for c in counts.values()) if total and min(counts.values()) > 0 else 1 / len(counts)
    return plan(spec, control.mean, control.variance, per_day, smallest, days)


def plan(
    spec: ExperimentSpec, mean: float, variance: float, per_day: float, smallest_share: float, days: float = 0.0
) -> Planning:
    """Users per variant for the MDE at the spec's alpha and power (two-sided normal approximation,
    the control's ``variance`` in both arms), and the days that takes when ``per_day`` users enrol
    and the smallest variant gets ``smallest_share`` of them (every enrolled user counted as new)."""
    effect = spec.mde * abs(mean) if spec.mde_relative else spec.mde
    if effect == 0:
        return Planning(math.inf, per_day, math.inf, days, False, "the control's mean is 0: a relative MDE is 0")
    z = sps.norm.isf(spec.alpha / 2) + sps.norm.isf(1 - spec.power)
    needed = float(2 * z**2 * variance / effect**2)
    days_needed = needed / (per_day * smallest_share) if per_day > 0 else math.inf
    feasible = bool(days_needed <= spec.planned_days)
    message = (
        f"at {per_day:,.0f} users a day this experiment detects the MDE in {days_needed:.1f} days"
        f" ({'within' if feasible else 'beyond'} its planned {spec.planned_days:g})"
    )
    return Planning(needed, per_day, days_needed, days, feasible, message)


def plan_at_creation(spec: ExperimentSpec, daily_users: float) -> Planning:
    """The plan before any data: the spec's baseline (mean, and sd for count and sum metrics) and
    ``daily_users`` of its surfaces (``spec.expected_daily_users`` when given), of whom ``coverage``
    enrol. Without a baseline there is nothing to size from: the plan says so (feasible)."""
    if spec.expected_daily_users:
        daily_users = spec.expected_daily_users
    if spec.baseline_mean is None:
        return Planning(
            math.nan, daily_users, math.nan, 0.0, True, "no plan: give baseline_mean to size the experiment"
        )
    if spec.primary_metric.binary:
        variance = spec.baseline_mean * (1 - spec.baseline_mean)
    elif spec.baseline_sd is None:
        return Planning(math.nan, daily_users, math.nan, 0.0, True,
                        f"no plan: give baseline_sd for a {spec.primary_metric.aggregate} metric")  # fmt: skip
    else:
        variance = spec.baseline_sd**2
    total = sum(w for _, w in spec.variants)
    smallest = min(w for _, w in spec.variants) / total
    found = plan(spec, spec.baseline_mean, variance, daily_users * spec.coverage, smallest)
    if daily_users <= 0:
        return replace(found, message="no traffic measured yet on its surfaces: give expected_daily_users to plan")
    return found


@dataclass(frozen=True)
class EffectPoint:
    at_ms: int
    metric: str
    variant: str
    users: int
    control_users: int
    comparison: Comparison | None  # None: too few users at that look


def effect_timeline(
    spec: ExperimentSpec,
    points: Sequence[tuple[int, Mapping[str, int], Mapping[str, Mapping[str, tuple[float, float]]]]],
) -> list[EffectPoint]:
    """Each metric's effect per treatment at each recorded look ``(at_ms, users, sums)``: the
    fixed-horizon comparison at ``spec.alpha`` (two-sided), pointwise: for plots of the effect over
    time, not for deciding (the sequential tests decide)."""
    out = []
    for at_ms, users, sums in points:
        counts = {v: int(users.get(v, 0)) for v in spec.variant_names}
        for metric in spec.metrics:
            sy, syy = sums.get(spec.control, {}).get(metric.name, (0.0, 0.0))
            control = Moments(float(counts[spec.control]), sy, syy)
            for variant in spec.variant_names[1:]:
                sy, syy = sums.get(variant, {}).get(metric.name, (0.0, 0.0))
                treatment = Moments(float(counts[variant]), sy, syy)
                usable = min(control.n, treatment.n) >= MIN_USERS and _varies(control, treatment)
                comparison = _compare(metric, control, treatment, spec.alpha, "two-sided") if usable else None
                out.append(EffectPoint(at_ms, metric.name, variant, counts[variant], counts[spec.control], comparison))
    return out
