"""The experiment monitor's reading of a running experiment, pure: one look at its sums, the
sequential tests' new state, and what to do about it.

Every look (the host, `workers/experiment_monitor.py`, takes one every few seconds) runs the
tests that are safe at any number of looks, each in the role the issue gives it:

- **Guardrails**: per guardrail and treatment, the one-sided mixture SPRT (`always_valid.py`) of
  "the treatment is worse than control by more than the metric's tolerance", at ``alpha`` over
  the number of guardrail tests (Bonferroni: the family-wise error stays ``alpha`` however often
  we look). The mixture averages several scales of harm (``tau``: the spec's MDE and 5%, 10%,
  25% of the control's mean, frozen at the first usable look): a single scale at a small MDE
  takes hours to catch a 20% regression that the average catches in minutes
  (`bench/experiments_monitor.py`). The tolerance margin follows the control's mean (an
  approximation: the margin is estimated, not known).
- **Sample ratio**: the Dirichlet-multinomial sequential test of the exposed users against the
  allocation's shares, at ``SRM_ALPHA``. Ramps keep the shares; a re-weighting changes them, and
  the counts then mix two splits (with users of old buckets mostly exposed already, new exposures
  come mostly from new buckets): the test is suspended for good rather than raise false alarms.
- **Primary metric**: a group-sequential design (Lan-DeMets O'Brien-Fleming, `sequential.py`)
  with looks scheduled daily over the planned duration (at least one look: the final one at the
  planned end). The planned sample per variant is the fixed-horizon sample for the MDE at
  ``alpha / treatments`` and the spec's power, times the design's inflation, sized from the
  control's variance at the first look that can (then frozen); a look's information fraction is
  the users per variant over it.

No test counts a look before every variant has ``MIN_USERS`` exposed users (their normal
approximations need them). A guardrail regression or a sample-ratio mismatch stops the experiment
(its users go back to the default experience) when ``spec.auto_stop``, with a reason a person can
read; otherwise they are only reported. A ramp step is taken once the current one has been held
for the next step's ``hold_hours`` and its gates pass (``min_users`` in every variant, no
sample-ratio mismatch, no guardrail regression). A primary decision is reported, never acted on:
shipping a winner is the team's call.

>>> import numpy as np
>>> from rewardloop.learning.experiments.buckets import BUCKETS
>>> from rewardloop.learning.experiments.spec import spec_from_dict
>>> from rewardloop.learning.experiments.lifecycle import create, start
>>> spec = spec_from_dict("e", {"variants": {"a": 1, "b": 1}, "primary_metric": {"source": "click"}})
>>> running = start(create(spec, now_ms=0), np.ones(BUCKETS, dtype=bool), now_ms=0)
>>> outcome = look(running, {"a": 5_000, "b": 5_600}, {}, MonitorState(), now_ms=60_000)
>>> outcome.action, outcome.reason.split(":")[:2]
('stop', ['stopped by the monitor', ' sample ratio mismatch'])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from scipy import optimize, special

from rewardloop.learning.experiments.always_valid import AlwaysValidState, MixtureSPRT, SampleRatioTest
from rewardloop.learning.experiments.lifecycle import RUNNING, Experiment
from rewardloop.learning.experiments.moments import Moments
from rewardloop.learning.experiments.sequential import GroupSequential, inflation_factor
from rewardloop.learning.experiments.simulation import planned_users
from rewardloop.learning.experiments.spec import ExperimentSpec, Metric
from rewardloop.learning.experiments.stats import cuped_if_varies

MIN_USERS = 100
# A guardrail's mixture averages scales of harm, relative to the control's mean: the spec's MDE and
# these, so a large regression is caught in minutes and a small one still is, later.
HARM_SCALES = (0.05, 0.1, 0.25)
SRM_ALPHA = 0.001
MAX_LOOKS = 100
TIMELINE_POINTS = 200  # effect-over-time points recorded over the planned duration
MIN_POINT_SECONDS = 1.0
DAY_MS = 86_400_000
STOP, RAMP = "stop", "ramp"

Users = Mapping[str, int]
Sums = Mapping[str, Mapping[str, tuple[float, float]]]  # variant -> metric -> (Σy, Σy²)
Covariates = Mapping[str, Mapping[str, tuple[float, float, float]]]  # variant -> metric -> (Σx, Σx², Σxy)


@dataclass(frozen=True)
class PrimaryLooks:
    """One treatment's group-sequential history on the primary metric."""

    fractions: tuple[float, ...] = ()
    z: tuple[float, ...] = ()
    boundary: float = math.inf
    verdict: str = "continue"  # continue | better | worse | inconclusive
    decided_look: int = 0  # 1-based; 0 while undecided

    @property
    def done(self) -> bool:
        return self.verdict != "continue"


@dataclass(frozen=True)
class Guardrail:
    """One guardrail test's state (one metric, one treatment): the mixture scales (``taus``, in the
    metric's units) and the always-valid state (p-value, confidence sequence of the difference)."""

    taus: tuple[float, ...]
    alpha: float
    test: AlwaysValidState = field(default_factory=AlwaysValidState)

    @property
    def regression(self) -> bool:
        return self.test.rejected(self.alpha)


@dataclass(frozen=True)
class MonitorState:
    """What the monitor keeps per experiment between looks (``to_dict``: JSON for Redis)."""

    looked_ms: int = 0
    looks_taken: int = 0  # scheduled primary looks passed
    planned_users: float = 0.0  # per variant; 0 until sized
    primary: Mapping[str, PrimaryLooks] = field(default_factory=dict)
    guardrails: Mapping[str, Guardrail] = field(default_factory=dict)  # "<metric>|<variant>"
    srm_p_value: float = 1.0
    # The split the SRM test checks (the allocation's shares at the first look); once the shares
    # change (re-weighting) the exposure counts mix two splits and the test no longer applies.
    srm_shares: Mapping[str, float] = field(default_factory=dict)
    srm_suspended: bool = False
    point_ms: int = 0  # the last timeline point
    gate: str = ""  # what the ramp's next step waits for, as of the last look

    def to_dict(self) -> dict[str, Any]:
        return {
            "looked_ms": self.looked_ms, "looks_taken": self.looks_taken, "planned_users": self.planned_users,
            "primary": {v: {"fractions": list(p.fractions), "z": list(p.z), "boundary": _finite(p.boundary),
                            "verdict": p.verdict, "decided_look": p.decided_look} for v, p in self.primary.items()},
            "guardrails": {k: {"taus": list(g.taus), "alpha": g.alpha, "test": g.test.to_dict()}
                           for k, g in self.guardrails.items()},
            "srm_p_value": self.srm_p_value, "point_ms": self.point_ms, "gate": self.gate,
            "srm_shares": dict(self.srm_shares), "srm_suspended": self.srm_suspended,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> MonitorState:
        primary = {
            v: PrimaryLooks(tuple(p["fractions"]), tuple(p["z"]), _infinite(p["boundary"]), p["verdict"],
                            p["decided_look"])
            for v, p in raw.get("primary", {}).items()
        }  # fmt: skip
        guardrails = {
            k: Guardrail(tuple(g["taus"]), g["alpha"], AlwaysValidState.from_dict(g["test"]))
            for k, g in raw.get("guardrails", {}).items()
        }
        return cls(
            raw.get("looked_ms", 0), raw.get("looks_taken", 0), raw.get("planned_users", 0.0), primary,
            guardrails, raw.get("srm_p_value", 1.0), raw.get("srm_shares", {}), raw.get("srm_suspended", False),
            raw.get("point_ms", 0), raw.get("gate", ""),
        )  # fmt: skip

    @property
    def srm(self) -> bool:
        return self.srm_p_value <= SRM_ALPHA and not self.srm_suspended

    def regressions(self) -> list[str]:
        return [key for key, g in self.guardrails.items() if g.regression]


@dataclass(frozen=True)
class Outcome:
    state: MonitorState
    action: str = ""  # "" | STOP | RAMP
    reason: str = ""
    point: bool = False  # a timeline point is due: record these sums


def look(
    experiment: Experiment,
    users: Users,
    sums: Sums,
    state: MonitorState,
    now_ms: int,
    covariates: Covariates | None = None,
) -> Outcome:
    """One look at a running experiment's sums (``users``: exposed users per variant; ``covariates``:
    the primary's CUPED sums, when kept: its looks then test the adjusted difference, as the
    results table does)."""
    if experiment.status != RUNNING:
        return Outcome(state)
    spec = experiment.spec
    counts = {v: int(users.get(v, 0)) for v in spec.variant_names}
    state = replace(state, looked_ms=now_ms)
    state = _sample_ratio(experiment, counts, state)
    ready = min(counts.values()) >= MIN_USERS
    if ready:
        state = _guardrails(spec, counts, sums, state)
        state = _primary(experiment, counts, sums, covariates or {}, state, now_ms)
    point = now_ms - state.point_ms >= _point_spacing_ms(spec)
    if point:
        state = replace(state, point_ms=now_ms)
    if spec.auto_stop and (state.srm or state.regressions()):
        # The look that acted is always on the timeline: it is the one a reader looks for.
        return Outcome(replace(state, point_ms=now_ms), STOP, _stop_reason(experiment, counts, sums, state), True)
    gate = _ramp_gate(experiment, counts, state, now_ms)
    state = replace(state, gate=gate or "")
    if gate is None:
        step = spec.ramp[experiment.ramp_step + 1]
        reason = (
            f"ramp to step {experiment.ramp_step + 2} (coverage {step.coverage:.0%}): held "
            f"{step.hold_hours:g} h, every variant has >= {step.min_users} users, no sample-ratio "
            "mismatch, no guardrail regression"
        )
        return Outcome(replace(state, point_ms=now_ms), RAMP, reason, True)
    return Outcome(state, point=point)


def scheduled_looks(spec: ExperimentSpec) -> int:
    """Daily over the planned duration, at least one (the final, at the planned end)."""
    return min(MAX_LOOKS, max(1, math.ceil(spec.planned_days - 1e-9)))


def _point_spacing_ms(spec: ExperimentSpec) -> float:
    return max(MIN_POINT_SECONDS * 1000, spec.planned_days * DAY_MS / TIMELINE_POINTS)


def _moments(counts: Users, sums: Sums, variant: str, metric: Metric) -> Moments:
    sy, syy = sums.get(variant, {}).get(metric.name, (0.0, 0.0))
    return Moments(float(counts[variant]), sy, syy)


def _difference(control: Moments, treatment: Moments) -> tuple[float, float]:
    """Treatment minus control mean, and its variance (Welch's, unpooled)."""
    return treatment.mean - control.mean, treatment.variance / treatment.n + control.variance / control.n


def _sample_ratio(experiment: Experiment, counts: Mapping[str, int], state: MonitorState) -> MonitorState:
    shares = experiment.allocation.shares()
    if state.srm_suspended:
        return state
    if not state.srm_shares:
        state = replace(state, srm_shares=shares)
    elif any(abs(shares.get(v, 0.0) - state.srm_shares.get(v, 0.0)) > 1e-9 for v in counts):
        return replace(state, srm_suspended=True)
    if sum(counts.values()) == 0 or any(shares.get(v, 0.0) <= 0 for v in counts):
        return state
    test = SampleRatioTest(tuple(shares[v] for v in counts), alpha=SRM_ALPHA)
    return replace(state, srm_p_value=test.p_value(list(counts.values()), previous=state.srm_p_value))


def _guardrails(spec: ExperimentSpec, counts: Users, sums: Sums, state: MonitorState) -> MonitorState:
    treatments = [v for v in spec.variant_names if v != spec.control]
    tests = len(spec.guardrails) * len(treatments)
    updated = dict(state.guardrails)
    for metric in spec.guardrails:
        for variant in treatments:
            control, treatment = _moments(counts, sums, spec.control, metric), _moments(counts, sums, variant, metric)
            estimate, variance = _difference(control, treatment)
            key = f"{metric.name}|{variant}"
            current = updated.get(key)
            if current is None:
                scale = abs(control.mean) or math.sqrt(control.variance)
                if not scale > 0:
                    continue  # no spread yet: nothing to size the mixture from
                taus = tuple(sorted({_relative_mde(spec), *HARM_SCALES}))
                current = Guardrail(taus=tuple(t * scale for t in taus), alpha=spec.alpha / tests)
            margin = metric.tolerance * abs(control.mean)
            tests_of = [
                MixtureSPRT(
                    tau=tau, alpha=current.alpha, alternative="less" if metric.higher_is_better else "greater",
                    null=-margin if metric.higher_is_better else margin,
                )
                for tau in current.taus
            ]  # fmt: skip
            updated[key] = replace(current, test=_averaged_update(tests_of, current.test, estimate, variance))
    return replace(state, guardrails=updated)


def _log_ratio(tests: list[MixtureSPRT], estimate: float, variance: float, null: float) -> float:
    """log of the tests' average likelihood ratio for the difference ``null``: each one-sided
    mixture's ``MixtureSPRT.log_likelihood_ratio`` (the same formula, in scalar arithmetic: this
    runs ~10 times a look per guardrail)."""
    x, v = estimate - null, variance
    ratios = []
    for test in tests:
        tau2 = test.tau * test.tau
        w = x * test.tau / math.sqrt(v * (v + tau2))
        tail = special.log_ndtr(-w if test.alternative == "less" else w)
        ratios.append(0.5 * math.log(v / (v + tau2)) + x * x * tau2 / (2.0 * v * (v + tau2)) + math.log(2.0) + tail)
    top = max(ratios)  # log-sum-exp in plain floats (scipy's costs ~0.3 ms a call)
    return top + math.log(sum(math.exp(r - top) for r in ratios) / len(ratios))


def _averaged_update(
    tests: list[MixtureSPRT], state: AlwaysValidState, estimate: float, variance: float
) -> AlwaysValidState:
    """A look of the average of one-sided mixture SPRTs: a test martingale still (an average of
    martingales), so its running p-value and confidence sequence stay valid at any look; each scale
    costs ``log(len(tests))`` of evidence and finds harms near its own size fast."""
    if not 0.0 < variance < math.inf:
        return state
    null, alpha, less = tests[0].null, tests[0].alpha, tests[0].alternative == "less"
    p = min(state.p_value, math.exp(-_log_ratio(tests, estimate, variance, null)))
    # The confidence sequence's end: the null difference at which the evidence reaches 1/alpha.
    target, reach = math.log(1.0 / alpha), 60.0 * math.sqrt(variance)
    edge = optimize.brentq(
        lambda theta: _log_ratio(tests, estimate, variance, theta) - target,
        *((estimate, estimate + reach) if less else (estimate - reach, estimate)),
    )
    low, high = (state.low, min(state.high, edge)) if less else (max(state.low, edge), state.high)
    return AlwaysValidState(p, low, high, state.looks + 1)


def _relative_mde(spec: ExperimentSpec) -> float:
    """The harm worth detecting, relative to the control's mean: the spec's MDE when it is relative
    (an absolute MDE is in the primary metric's units, not a guardrail's: 5% then)."""
    return spec.mde if spec.mde_relative else 0.05


def _primary(
    experiment: Experiment, counts: Users, sums: Sums, covariates: Covariates, state: MonitorState, now_ms: int
) -> MonitorState:
    """The primary's group-sequential look, if one is due. The planned sample is sized from the
    control's unadjusted variance: CUPED's smaller variance makes each look's information larger than
    its fraction says, which only makes the boundaries conservative."""
    spec = experiment.spec
    looks = scheduled_looks(spec)
    due = min(looks, int((now_ms - experiment.started_ms) * looks // max(1.0, spec.planned_days * DAY_MS)))
    if due <= state.looks_taken:
        return state
    treatments = [v for v in spec.variant_names if v != spec.control]
    alpha = spec.alpha / len(treatments)
    control = _moments(counts, sums, spec.control, spec.primary_metric)
    planned = state.planned_users
    if planned <= 0:
        effect = spec.mde * abs(control.mean) if spec.mde_relative else spec.mde
        if not (control.variance > 0 and effect > 0):
            return state  # not sizeable yet: this look waits for the next one
        inflation = inflation_factor(alpha, spec.power, looks=looks)
        planned = planned_users(alpha, spec.power, effect, 2 * control.variance, inflation)
    design = GroupSequential(alpha=alpha)
    primary = dict(state.primary)
    for variant in treatments:
        history = primary.get(variant, PrimaryLooks())
        if history.done:
            continue
        treatment = _moments(counts, sums, variant, spec.primary_metric)
        estimate, variance = _difference(*_cuped(covariates, spec, control, variant, treatment))
        z = estimate / math.sqrt(variance) if variance > 0 else 0.0
        fraction = min(1.0, (control.n + treatment.n) / 2 / planned)
        if history.fractions:
            fraction = max(fraction, min(1.0, history.fractions[-1] + 1e-6))
            if history.fractions[-1] >= 1.0:
                continue
        final = due >= looks or fraction >= 1.0
        fractions, zs = (*history.fractions, fraction), (*history.z, z)
        boundary = float(design.boundary(fractions, final=final)[-1])
        verdict, decided = "continue", 0
        if abs(z) >= boundary:
            verdict = "better" if (z > 0) == spec.primary_metric.higher_is_better else "worse"
            decided = len(fractions)
        elif final:
            verdict = "inconclusive"
        primary[variant] = PrimaryLooks(fractions, zs, boundary, verdict, decided)
    return replace(state, looks_taken=due, planned_users=planned, primary=primary)


def _cuped(
    covariates: Covariates, spec: ExperimentSpec, control: Moments, variant: str, treatment: Moments
) -> tuple[Moments, Moments]:
    """The primary's moments of control and ``variant``, CUPED-adjusted when covariates vary."""

    def with_x(moments: Moments, name: str) -> Moments:
        sx, sxx, sxy = covariates.get(name, {}).get(spec.primary_metric.name, (0.0, 0.0, 0.0))
        return replace(moments, sum_x=sx, sum_x2=sxx, sum_xy=sxy)

    # Looked at only once every variant has MIN_USERS: the adjustment has the two users it needs.
    adjusted = cuped_if_varies(with_x(control, spec.control), with_x(treatment, variant))
    return (control, treatment) if adjusted is None else (adjusted.control, adjusted.treatment)


def _ramp_gate(experiment: Experiment, counts: Users, state: MonitorState, now_ms: int) -> str | None:
    """None: take the next ramp step now; else what it waits for ("" when there is none)."""
    spec = experiment.spec
    if experiment.ramp_step + 1 >= len(spec.ramp):
        return ""
    step = spec.ramp[experiment.ramp_step + 1]
    waits = []
    held_hours = (now_ms - experiment.stepped_ms) / 3_600_000
    if held_hours < step.hold_hours:
        waits.append(f"held {held_hours:.1f} of {step.hold_hours:g} h")
    short = {v: n for v, n in counts.items() if n < step.min_users}
    if short:
        waits.append("users " + ", ".join(f"{v} {n}/{step.min_users}" for v, n in short.items()))
    if state.srm:
        waits.append("a sample-ratio mismatch")
    if state.regressions():
        waits.append("guardrail regressions: " + ", ".join(state.regressions()))
    return ("next ramp step waits for: " + "; ".join(waits)) if waits else None


def _stop_reason(experiment: Experiment, counts: Users, sums: Sums, state: MonitorState) -> str:
    spec = experiment.spec
    found = []
    for key in state.regressions():
        metric_name, variant = key.split("|")
        metric = next(m for m in spec.guardrails if m.name == metric_name)
        control, treatment = _moments(counts, sums, spec.control, metric), _moments(counts, sums, variant, metric)
        change = treatment.mean / control.mean - 1 if control.mean else math.nan
        guardrail = state.guardrails[key]
        found.append(
            f"guardrail {metric_name} regressed in variant {variant}: {treatment.mean:.4g} against control's "
            f"{control.mean:.4g} ({change:+.1%}, tolerance {metric.tolerance:.1%}; always-valid p "
            f"{guardrail.test.p_value:.2g} <= {guardrail.alpha:.2g})"
        )
    if state.srm:
        shares = experiment.allocation.shares()
        total = sum(counts.values())
        observed = ", ".join(f"{v} {n} ({n / total:.1%}, expected {shares.get(v, 0):.1%})" for v, n in counts.items())
        found.append(
            f"sample ratio mismatch: exposed users {observed}; always-valid p {state.srm_p_value:.2g} <= {SRM_ALPHA}"
            " (assignment or exposure logging is broken: the comparisons cannot be trusted)"
        )
    return "stopped by the monitor: " + "; ".join(found)


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else value


def _infinite(value: float | None) -> float:
    return math.inf if value is None else float(value)
