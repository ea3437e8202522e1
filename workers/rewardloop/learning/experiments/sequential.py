"""Group-sequential tests for goal metrics: Lan-DeMets alpha spending on a z statistic.

Why: a goal metric is looked at every day, and a fixed-horizon test read daily rejects a true
null far more often than its alpha says (14 daily looks at alpha 0.05: ~20%). A group-sequential
design spends alpha over the looks so the chance of any false rejection stays alpha. It costs
little sample: with O'Brien-Fleming-type spending the planned horizon grows ~2-10% over the
fixed-horizon sample for the same power (``inflation_factor``), against ~2x for always-valid
tests (``always_valid``), which are kept for guardrails and SRM where looks are continuous.

The spending function (Lan & DeMets, Biometrika 1983) says how much alpha is spent by an
information fraction ``t``, so looks need not be planned: each look's boundary depends only on
the fractions of that look and the earlier ones, and never changes once computed. Conventions:

- Two-sided and symmetric: reject at look ``k`` when ``|z_k| >= boundary[k]``; each side spends
  half of alpha. O'Brien-Fleming type (the default) spends ``2 - 2 Phi(z_{1-alpha/4} / sqrt(t))``
  per side, as gsDesign's ``sfLDOF`` and ldbounds do; Pocock type spends
  ``alpha log(1 + (e - 1) t)`` in total.
- ``t`` is the information so far over the planned maximum: users so far over planned users (per
  arm, or in total: the ratio is the same). At ``t >= 1`` the look is the final one and spends
  all that is left. Information beyond the plan (``t > 1``) keeps its true value for the
  correlation of the z's (``corr(z_i, z_j) = sqrt(t_i / t_j)``); spending is capped at 1. A look
  declared ``final`` before ``t = 1`` (the experiment is stopped short) also spends the rest.
- An increment of spending too small for a float (O'Brien-Fleming at ``t`` below ~0.003) gives
  an infinite boundary: that look cannot reject.

Boundaries come from the recursive numerical integration of Armitage, McPherson & Rowe (JRSS A
1969) as Jennison & Turnbull, *Group Sequential Methods with Applications to Clinical Trials*
(2000), ch. 19 describe it: the sub-density of ``z_k`` on the continuation region, on a grid
with Simpson weights, is carried from look to look; each boundary is the root of the exit
probability equal to the alpha increment. Accurate to ~1e-5 in z (tests check published
values and a multivariate normal oracle).

>>> design = GroupSequential(alpha=0.05)
>>> [round(float(c), 3) for c in design.boundary([0.2, 0.4, 0.6, 0.8, 1.0])]
[4.877, 3.357, 2.68, 2.29, 2.031]
>>> design.decide(z_history=[1.1, 2.4, 3.5], fractions=[0.2, 0.4, 0.6])
Decision(decided=True, look=2)
>>> round(inflation_factor(0.05, 0.8, looks=5), 3)
1.025
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import optimize, special

from rewardloop.learning.params import ConfigError, in_interval, int_in_range

SPENDING = ("obrien_fleming", "pocock")
MAX_LOOKS = 1000

# The grid covers the look's mean +- 8 sd (the mass beyond is < 1e-15), at most 0.05 apart and
# at least 6 points per sd of the narrowest transition kernel, so closely spaced unplanned looks
# stay accurate; Simpson's rule then errs by < 1e-7 in probability.
_TAIL = 8.0
_SPACING = 0.05
_POINTS_PER_SD = 6.0
_MAX_POINTS = 2001
_MAX_BOUNDARY = 40.0  # Phi(-40) underflows: any alpha increment > 0 has a root below it
_SQRT_2PI = math.sqrt(2.0 * math.pi)

Fractions = Sequence[float] | np.ndarray
"""Information fractions of the looks so far: a list, or a numpy array."""


class Decision(NamedTuple):
    """The first look whose z crossed its boundary (the metric differs; z's sign says which way)."""

    decided: bool
    look: int | None
    """Index into the look history; None while no look has crossed."""


@dataclass(frozen=True)
class GroupSequential:
    """A two-sided group-sequential test at level ``alpha`` with Lan-DeMets ``spending``."""

    alpha: float = 0.05
    """Probability of any false rejection over all looks."""
    spending: str = "obrien_fleming"
    """``"obrien_fleming"`` (spends little early: the final boundary stays near the fixed test's)
    or ``"pocock"`` (nearly flat boundaries: earlier decisions, larger maximum sample)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", in_interval("alpha", self.alpha, 0.0, 1.0, open_low=True, open_high=True))
        if self.spending not in SPENDING:
            raise ConfigError(f"spending must be one of {', '.join(SPENDING)}, got {self.spending!r}")

    def spent(self, fraction: float) -> float:
        """Alpha spent (both sides) by information fraction ``fraction`` (capped to [0, 1]).

        >>> design = GroupSequential()
        >>> design.spent(1.0), round(design.spent(0.5), 5), round(GroupSequential(spending="pocock").spent(0.5), 4)
        (0.05, 0.00305, 0.031)
        """
        return _spent(self.alpha, self.spending, fraction)

    def boundary(self, fractions: Fractions, *, final: bool = False) -> np.ndarray:
        """The z critical values of the looks at ``fractions`` (strictly increasing, > 0).

        ``final`` declares the last look the final one (all remaining alpha is spent); a look at
        ``t >= 1`` is final anyway and no look may follow it.
        """
        return _boundaries(self.alpha, self.spending, _check_fractions(fractions), final).copy()

    def decide(self, z_history: Sequence[float] | np.ndarray, fractions: Fractions, *, final: bool = False) -> Decision:
        """Whether a look crossed its boundary, and the first that did.

        >>> GroupSequential().decide([2.5, 2.5], [0.5, 1.0])
        Decision(decided=True, look=1)
        """
        z = np.asarray(z_history, dtype=float)
        if z.ndim != 1 or z.size != len(fractions):
            raise ConfigError(f"z_history must hold one z per fraction ({len(fractions)}), got shape {z.shape}")
        if not np.all(np.isfinite(z)):
            raise ConfigError("z_history must be finite")
        crossed = np.flatnonzero(np.abs(z) >= self.boundary(fractions, final=final))
        return Decision(True, int(crossed[0])) if crossed.size else Decision(False, None)

    def exit_probabilities(
        self, fractions: Fractions, drift: float = 0.0, *, final: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per look, the probability of stopping there above (``z >= c``) and below (``z <= -c``).

        ``drift`` is the mean of the z statistic at ``t = 1`` (``effect / se`` at the planned
        horizon); at ``t`` the mean is ``drift * sqrt(t)``. Under the null (0) both sum to alpha.
        """
        checked = _check_fractions(fractions)
        bounds = _boundaries(self.alpha, self.spending, checked, final)
        drift = in_interval("drift", drift, -50.0, 50.0)
        exits = _walk(checked, drift, lambda k, _: float(bounds[k]))
        return np.array([e[1] for e in exits]), np.array([e[2] for e in exits])

    def inflation_factor(self, power: float, *, looks: int) -> float:
        """``inflation_factor(self.alpha, power, self.spending, looks=looks)``."""
        return inflation_factor(self.alpha, power, self.spending, looks=looks)


def inflation_factor(alpha: float, power: float, spending: str = "obrien_fleming", *, looks: int) -> float:
    """The planned maximum sample over the fixed-horizon sample that keeps ``power``, with
    ``looks`` equally spaced looks (the last at the planned horizon).

    The drift at which the upper exit probability equals ``power`` is found by root search; the
    factor is its square over the fixed test's ``(z_{1-alpha/2} + z_power)**2``. Jennison &
    Turnbull's Table 2.3 (classical O'Brien-Fleming, 5 looks, 80%) lists 1.028; the spending
    version is a bit cheaper.

    >>> round(inflation_factor(0.05, 0.8, looks=1), 6), round(inflation_factor(0.05, 0.8, looks=14), 3)
    (1.0, 1.042)
    >>> round(inflation_factor(0.05, 0.8, "pocock", looks=5), 3)
    1.213
    """
    design = GroupSequential(alpha, spending)
    power = in_interval("power", power, alpha / 2.0, 1.0, open_low=True, open_high=True)
    looks = int_in_range("looks", looks, 1, MAX_LOOKS)
    return _inflation(design.alpha, design.spending, power, looks)


# --- the numerical integration ----------------------------------------------------------------


def _spent(alpha: float, spending: str, fraction: float) -> float:
    t = min(max(fraction, 0.0), 1.0)
    if t == 0.0:
        return 0.0
    if t == 1.0:
        return alpha
    if spending == "pocock":
        return alpha * math.log1p((math.e - 1.0) * t)
    # per side 2 - 2 Phi(z_{1 - alpha/4} / sqrt(t)), so both sides spend 4 Phi(-z / sqrt(t))
    return 4.0 * float(special.ndtr(special.ndtri(alpha / 4.0) / math.sqrt(t)))


def _check_fractions(fractions: Fractions) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in fractions)
    except (TypeError, ValueError):
        raise ConfigError(f"fractions must be real numbers, got {fractions!r}") from None
    if not 1 <= len(values) <= MAX_LOOKS:
        raise ConfigError(f"fractions must hold 1 to {MAX_LOOKS} looks, got {len(values)}")
    for k, t in enumerate(values):
        if not (math.isfinite(t) and t > 0.0):
            raise ConfigError(f"fractions[{k}] must be a finite number > 0, got {t}")
        if k and t <= values[k - 1]:
            raise ConfigError(f"fractions must be strictly increasing: fractions[{k}] = {t} <= {values[k - 1]}")
        if k and values[k - 1] >= 1.0:
            raise ConfigError(f"fractions[{k}] follows the final look (fraction {values[k - 1]} >= 1)")
    return values


@dataclass(frozen=True)
class _Stage:
    """The sub-density of ``z`` at a look on its continuation region (no exit so far)."""

    t: float
    points: np.ndarray
    mass: np.ndarray
    """Simpson weight times sub-density at each point."""


ExitFn = Callable[[float], tuple[float, float]]


def _exit(stage: _Stage | None, t: float, c: float, drift: float) -> tuple[float, float]:
    """P(no exit before, z >= c at t), P(no exit before, z <= -c at t)."""
    if stage is None:
        mean = drift * math.sqrt(t)
        return float(special.ndtr(mean - c)), float(special.ndtr(-c - mean))
    delta = t - stage.t
    mean_s = stage.points * math.sqrt(stage.t) + drift * delta  # score scale S = z sqrt(t)
    edge = c * math.sqrt(t)
    sd = math.sqrt(delta)
    upper = stage.mass @ special.ndtr((mean_s - edge) / sd)
    lower = stage.mass @ special.ndtr((-edge - mean_s) / sd)
    return float(upper), float(lower)


def _advance(stage: _Stage | None, t: float, c: float, next_t: float, drift: float) -> _Stage:
    """The stage at look ``t`` (boundary ``c``), gridded finely enough for the step to ``next_t``."""
    mean = drift * math.sqrt(t)
    low, high = max(-c, mean - _TAIL), min(c, mean + _TAIL)
    if low >= high:  # every path has exited (an extreme drift)
        return _Stage(t, np.empty(0), np.empty(0))
    narrowest = math.sqrt((next_t - t) / t)
    if stage is not None:
        narrowest = min(narrowest, math.sqrt((t - stage.t) / t))
    spacing = max(min(_SPACING, narrowest / _POINTS_PER_SD), (high - low) / (_MAX_POINTS - 1))
    intervals = 2 * max(1, math.ceil((high - low) / (2.0 * spacing)))
    points = np.linspace(low, high, intervals + 1)
    weights = np.full(intervals + 1, 2.0)
    weights[1::2] = 4.0
    weights[[0, -1]] = 1.0
    weights *= (high - low) / intervals / 3.0
    if stage is None:
        density = np.exp(-0.5 * (points - mean) ** 2) / _SQRT_2PI
    else:
        delta = t - stage.t
        u = (points[:, None] * math.sqrt(t) - (stage.points * math.sqrt(stage.t) + drift * delta)) / math.sqrt(delta)
        density = (np.exp(-0.5 * u * u) @ stage.mass) * math.sqrt(t / delta) / _SQRT_2PI
    return _Stage(t, points, weights * density)


def _walk(
    fractions: tuple[float, ...], drift: float, choose: Callable[[int, ExitFn], float]
) -> list[tuple[float, float, float]]:
    """Per look ``(boundary, upper exit, lower exit)``; ``choose(k, exit)`` gives look k's boundary."""
    stage: _Stage | None = None
    out: list[tuple[float, float, float]] = []
    for k, t in enumerate(fractions):
        if k:
            stage = _advance(stage, fractions[k - 1], out[-1][0], t, drift)
        exit_at = functools.partial(_exit, stage, t, drift=drift)
        c = choose(k, exit_at)
        out.append((c, *exit_at(c)))
    return out


@functools.lru_cache(maxsize=256)
def _boundaries(alpha: float, spending: str, fractions: tuple[float, ...], final: bool) -> np.ndarray:
    spent_by = [
        alpha if t >= 1.0 or (final and k == len(fractions) - 1) else _spent(alpha, spending, t)
        for k, t in enumerate(fractions)
    ]

    def choose(k: int, exit_at: ExitFn) -> float:
        increment = spent_by[k] - (spent_by[k - 1] if k else 0.0)
        if increment <= 0.0:
            return math.inf
        if sum(exit_at(0.0)) <= increment:  # less is left to stop than to spend: stop every path
            return 0.0
        return float(optimize.brentq(lambda c: sum(exit_at(c)) - increment, 0.0, _MAX_BOUNDARY, xtol=1e-9))

    bounds = np.array([c for c, _, _ in _walk(fractions, 0.0, choose)])
    bounds.flags.writeable = False
    return bounds


@functools.lru_cache(maxsize=256)
def _inflation(alpha: float, spending: str, power: float, looks: int) -> float:
    fractions = tuple((k + 1) / looks for k in range(looks))
    bounds = _boundaries(alpha, spending, fractions, True)

    def shortfall(drift: float) -> float:
        return sum(up for _, up, _ in _walk(fractions, drift, lambda k, _: float(bounds[k]))) - power

    fixed = float(special.ndtri(1.0 - alpha / 2.0) + special.ndtri(power))
    drift = optimize.brentq(shortfall, 0.0, 2.0 * fixed + 10.0, xtol=1e-9)
    return float((drift / fixed) ** 2)
