"""Always-valid tests for guardrails and sample ratio mismatch: safe under continuous monitoring.

Why: guardrails (a latency or error metric getting worse) and the assignment split (SRM) are
checked after every update, as long as an experiment runs, with no planned horizon. A test whose
p-value may be read at any time and any number of times needs a test martingale: the chance that
its likelihood ratio ever reaches ``1/alpha`` under the null is at most ``alpha`` (Ville's
inequality). The price is sample: at 80% power an always-valid test needs ~2x the fixed-horizon
sample, where a group-sequential design (``sequential``) needs ~1.05x, which is why goal metrics
use the latter.

``MixtureSPRT`` is the mixture sequential probability ratio test of Johari, Koomen, Pekelis &
Walsh, "Always valid inference: continuous monitoring of A/B tests" (Operations Research 2022;
arXiv 1512.04922), on a difference of means ``estimate`` with ``variance`` (``se**2``) at each
look: the normal likelihood ratio of ``theta = null + u`` against ``theta = null`` mixed over
``u ~ N(0, tau**2)``,

    Lambda = sqrt(V / (V + tau**2)) * exp(x**2 tau**2 / (2 V (V + tau**2))),  x = estimate - null.

One-sided tests mix over the half-normal on the alternative's side (``"less"``: ``u < 0``), which
gives ``2 Phi(-x tau / sqrt(V (V + tau**2))) Lambda``; it is a supermartingale under every
``theta`` of the composite null ``theta >= null``. A guardrail asks "is the treatment worse by
more than its tolerance": ``alternative="less"``, ``null=-tolerance`` (in the metric's units,
treatment minus control, for a higher-is-better metric; ``"greater"`` for lower-is-better).

The p-value is the running minimum of ``1 / Lambda`` (never increases) and the confidence
sequence the running intersection of ``{theta0 : Lambda(theta0) < 1/alpha}``; both need only the
last state (``AlwaysValidState``, four numbers) and the look's estimate and variance.

``tau``: the prior sd of the effect, in the units of the difference. Use the MDE (the guardrail's
smallest harm worth detecting): the mixture boundary ``|z| >= sqrt((1 + 1/r)(2 log(1/alpha) +
log(1 + r)))``, ``r = tau**2 / V``, is lowest at ``r ~ 8.2`` for alpha 0.05 (11.8 at 0.01), and a
horizon planned for 80% power at the MDE has ``r = (z_{1-alpha/2} + z_{0.8})**2 = 7.8`` (11.7): so
``tau = MDE`` puts the test's tightest boundary (|z| ~ 3.04) at the planned horizon.

``SampleRatioTest`` is the sequential SRM test of Lindon & Malek, "Anytime-valid inference for
multinomial count data" (NeurIPS 2022): the Bayes factor of the assignment counts under a
Dirichlet(``concentration * weights``) mixture against the planned weights, a test martingale
under the null. Its default concentration 100 is the one of their reference implementation
(savvi's ``Multinomial(k=100)``): prior sd of a 50/50 split's share ~0.05, so splits off by a
few points are found within tens of thousands of assignments.

>>> guardrail = MixtureSPRT(tau=0.01, alternative="less")
>>> state = guardrail.update(AlwaysValidState(), estimate=-0.02, variance=0.005**2)
>>> round(state.p_value, 6), round(state.high, 4), state.rejected(guardrail.alpha)
(0.001858, -0.0061, True)
>>> srm = SampleRatioTest(weights=(1.0, 1.0))
>>> srm.p_value([10_400, 9_600]) < srm.alpha, srm.p_value([10_030, 9_970]) < srm.alpha
(True, False)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special

from rewardloop.learning.params import ConfigError, in_interval, positive, reject_unknown

ALTERNATIVES = ("two-sided", "less", "greater")
STATE_FIELDS = ("p_value", "low", "high", "looks")
_NEWTON_STEPS = 30  # from above on a convex increasing function: ~6 suffice, the rest are free


@dataclass(frozen=True)
class AlwaysValidState:
    """What the service keeps per experiment and metric between looks (``to_dict`` for Redis)."""

    p_value: float = 1.0
    """Running minimum of ``1 / Lambda``: the always-valid p-value so far."""
    low: float = -math.inf
    """Lower end of the confidence sequence (running intersection); -inf while unbounded."""
    high: float = math.inf
    """Upper end of the confidence sequence; +inf while unbounded."""
    looks: int = 0
    """Looks with usable evidence so far."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "p_value", in_interval("p_value", self.p_value, 0.0, 1.0))
        for name in ("low", "high"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
                raise ConfigError(f"{name} must be a real number, got {value!r}")
            if math.isnan(value):
                raise ConfigError(f"{name} must not be nan")
            object.__setattr__(self, name, float(value))
        if isinstance(self.looks, bool) or not isinstance(self.looks, int | np.integer) or self.looks < 0:
            raise ConfigError(f"looks must be an integer >= 0, got {self.looks!r}")
        object.__setattr__(self, "looks", int(self.looks))

    def rejected(self, alpha: float) -> bool:
        """Whether the null is rejected at level ``alpha`` (at this look or any earlier one)."""
        return self.p_value <= alpha

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-safe: an unbounded end is None (JSON has no infinity)."""
        return {
            "p_value": self.p_value,
            "low": None if math.isinf(self.low) else self.low,
            "high": None if math.isinf(self.high) else self.high,
            "looks": self.looks,
        }

    @classmethod
    def from_dict(cls, spec: Mapping[str, float | int | None]) -> AlwaysValidState:
        reject_unknown("always_valid_state", spec, set(STATE_FIELDS))
        low, high = spec.get("low"), spec.get("high")
        return cls(
            p_value=spec.get("p_value", 1.0),  # type: ignore[arg-type]
            low=-math.inf if low is None else low,
            high=math.inf if high is None else high,
            looks=spec.get("looks", 0),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class MixtureSPRT:
    """A mixture SPRT on a difference of means: ``H0: theta = null`` (two-sided) or
    ``theta >= null`` (``"less"``) or ``theta <= null`` (``"greater"``)."""

    tau: float
    """Prior sd of the effect in the difference's units: the MDE (see the module docstring)."""
    alpha: float = 0.05
    alternative: str = "two-sided"
    null: float = 0.0
    """The effect tested against: 0, or minus a guardrail's tolerance (``alternative="less"``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tau", positive("tau", self.tau))
        object.__setattr__(self, "alpha", in_interval("alpha", self.alpha, 0.0, 1.0, open_low=True, open_high=True))
        if self.alternative not in ALTERNATIVES:
            raise ConfigError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {self.alternative!r}")
        null = in_interval("null", self.null, -math.inf, math.inf)
        if not math.isfinite(null):
            raise ConfigError(f"null must be finite, got {self.null}")
        object.__setattr__(self, "null", null)

    def log_likelihood_ratio(self, estimate: npt.ArrayLike, variance: npt.ArrayLike) -> np.ndarray:
        """``log Lambda`` per look (arrays broadcast); 0 where the variance is not > 0 (no evidence).

        >>> float(MixtureSPRT(tau=1.0).log_likelihood_ratio(0.0, 1.0)) == 0.5 * math.log(0.5)
        True
        """
        x = np.asarray(estimate, dtype=float) - self.null
        v = np.asarray(variance, dtype=float)
        usable = (v > 0.0) & np.isfinite(v) & np.isfinite(x)
        v = np.where(usable, v, 1.0)
        x = np.where(usable, x, 0.0)
        tau2 = self.tau * self.tau
        llr = 0.5 * np.log(v / (v + tau2)) + x * x * tau2 / (2.0 * v * (v + tau2))
        if self.alternative != "two-sided":
            w = x * self.tau / np.sqrt(v * (v + tau2))
            llr = llr + math.log(2.0) + special.log_ndtr(-w if self.alternative == "less" else w)
        return np.where(usable, llr, 0.0)

    def p_values(self, estimates: npt.ArrayLike, variances: npt.ArrayLike) -> np.ndarray:
        """Always-valid p-values along the last axis (looks): the running minimum of ``1/Lambda``."""
        p = np.minimum(1.0, np.exp(-self.log_likelihood_ratio(estimates, variances)))
        return np.minimum.accumulate(p, axis=-1)

    def confidence_bounds(self, estimate: npt.ArrayLike, variance: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """This look's ``{theta0 : Lambda(theta0) < 1/alpha}`` as (low, high); one-sided: a half-line.

        >>> low, high = MixtureSPRT(tau=1.0).confidence_bounds(0.5, 0.01)
        >>> round(float(low), 4), round(float(high), 4)
        (0.1727, 0.8273)
        """
        x = np.asarray(estimate, dtype=float)
        v = np.asarray(variance, dtype=float)
        usable = (v > 0.0) & np.isfinite(v) & np.isfinite(x)
        v = np.where(usable, v, 1.0)
        tau2 = self.tau * self.tau
        scale = np.sqrt(v * (v + tau2)) / self.tau  # |x| = w * scale where w is the standardized excess
        log_odds = math.log(1.0 / self.alpha) + 0.5 * np.log1p(tau2 / v)
        if self.alternative == "two-sided":
            radius = scale * np.sqrt(2.0 * log_odds)
            low, high = x - radius, x + radius
        else:
            radius = scale * _one_sided_root(log_odds - math.log(2.0))
            low = np.where(self.alternative == "greater", x - radius, -np.inf)
            high = np.where(self.alternative == "less", x + radius, np.inf)
        return np.where(usable, low, -np.inf), np.where(usable, high, np.inf)

    def update(self, state: AlwaysValidState, estimate: float, variance: float) -> AlwaysValidState:
        """The state after a look at ``estimate`` (treatment minus control) with ``variance``.

        A look with variance 0 (no spread yet, e.g. no conversions) carries no evidence: the state
        is returned unchanged.
        """
        if isinstance(estimate, bool) or not isinstance(estimate, int | float | np.integer | np.floating):
            raise ConfigError(f"estimate must be a real number, got {estimate!r}")
        if not math.isfinite(estimate):
            raise ConfigError(f"estimate must be finite, got {estimate}")
        variance = in_interval("variance", variance, 0.0, math.inf)
        if not 0.0 < variance < math.inf:
            return state
        p = min(state.p_value, math.exp(-float(self.log_likelihood_ratio(estimate, variance))))
        low, high = self.confidence_bounds(estimate, variance)
        return AlwaysValidState(p, max(state.low, float(low)), min(state.high, float(high)), state.looks + 1)


def _one_sided_root(target: np.ndarray) -> np.ndarray:
    """``w`` with ``w**2 / 2 + log Phi(w) = target``: the one-sided boundary, standardized.

    The left side is increasing and convex in ``w`` (its second derivative is a truncated
    normal's variance, in (0, 1)), so Newton's method from the bracket's upper end
    ``sqrt(2 (target + log 2))`` descends monotonically onto the root.
    """
    w = np.sqrt(2.0 * np.maximum(target + math.log(2.0), 0.0))
    for _ in range(_NEWTON_STEPS):
        mills = np.exp(-0.5 * w * w - 0.5 * math.log(2.0 * math.pi) - special.log_ndtr(w))
        w = w - (0.5 * w * w + special.log_ndtr(w) - target) / (w + mills)
    return w


@dataclass(frozen=True)
class SampleRatioTest:
    """Sequential SRM test: are the assignment counts drawn with the planned ``weights``?"""

    weights: tuple[float, ...]
    """Planned allocation per variant, any positive scale (normalised here)."""
    alpha: float = 0.001
    """An SRM invalidates the experiment's analysis, so a false alarm is costly: a strict level
    (Kohavi et al. use 0.0005 for the fixed chi-squared check)."""
    concentration: float = 100.0
    """Dirichlet prior concentration (``k``): the prior is ``Dirichlet(k * weights)``."""

    def __post_init__(self) -> None:
        weights = tuple(self.weights)
        if not 2 <= len(weights) <= 1000:
            raise ConfigError(f"weights must hold 2 to 1000 variants, got {len(weights)}")
        checked = [positive(f"weights[{i}]", w) for i, w in enumerate(weights)]
        total = math.fsum(checked)
        object.__setattr__(self, "weights", tuple(w / total for w in checked))
        object.__setattr__(self, "alpha", in_interval("alpha", self.alpha, 0.0, 1.0, open_low=True, open_high=True))
        object.__setattr__(self, "concentration", positive("concentration", self.concentration))

    def log_bayes_factor(self, counts: npt.ArrayLike) -> np.ndarray:
        """``log BF`` of counts (last axis: variants) against the planned weights.

        >>> round(float(SampleRatioTest((1, 1)).log_bayes_factor([0, 0])), 12)
        0.0
        """
        x = np.asarray(counts, dtype=float)
        if x.shape[-1:] != (len(self.weights),):
            raise ConfigError(f"counts must hold one count per variant ({len(self.weights)}), got shape {x.shape}")
        theta = np.asarray(self.weights)
        prior = self.concentration * theta
        n = x.sum(axis=-1)
        marginal = (
            special.gammaln(self.concentration)
            - special.gammaln(self.concentration + n)
            + (special.gammaln(prior + x) - special.gammaln(prior)).sum(axis=-1)
        )
        return np.asarray(marginal - (x * np.log(theta)).sum(axis=-1))

    def p_value(self, counts: Sequence[float] | npt.ArrayLike, previous: float = 1.0) -> float:
        """The always-valid p-value after an update of the cumulative ``counts``: ``min(previous,
        1/BF)``. Checking after every assignment or after batches of them is equally valid."""
        x = np.asarray(counts, dtype=float)
        if x.ndim != 1 or not np.all(np.isfinite(x) & (x >= 0.0)):
            raise ConfigError(f"counts must be finite numbers >= 0, one per variant, got {counts!r}")
        previous = in_interval("previous", previous, 0.0, 1.0)
        return min(previous, math.exp(-max(float(self.log_bayes_factor(x)), 0.0)))

    def p_values(self, counts: npt.ArrayLike) -> np.ndarray:
        """Always-valid p-values of cumulative counts of shape (..., looks, variants) along the looks."""
        p = np.exp(-np.maximum(self.log_bayes_factor(counts), 0.0))
        return np.minimum.accumulate(p, axis=-1)
