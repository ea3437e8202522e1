"""Off-policy evaluation: a target policy's value estimated from logged bandit decisions.

Each logged decision showed one action ``a_i`` in context ``x_i``, drawn by the logging policy
``mu`` with probability ``mu(a_i|x_i)`` (the propensity rewardloop records with every decision),
and earned a reward ``r_i`` in [0, 1]. With importance weights ``w_i = pi(a_i|x_i) / mu(a_i|x_i)``
for a target policy ``pi``:

- **IPS** (inverse propensity scoring): ``mean(w_i r_i)``. Unbiased when ``mu`` gives every
  action ``pi`` may take a positive probability; its variance grows with the weights.
- **SNIPS** (self-normalised IPS, Swaminathan & Joachims 2015): ``sum(w_i r_i) / sum(w_i)``.
  Biased by O(1/N) but far less variable when weights are large, and always within the reward
  range.
- **DR** (doubly robust, Dudik, Langford & Li 2011): ``mean(sum_a pi(a|x_i) q(x_i, a)
  + w_i (r_i - q(x_i, a_i)))`` for a reward model ``q``. Unbiased whenever IPS is, and its
  variance shrinks as ``q`` gets better; ``reward_model.fit_reward_model`` /
  ``cross_fitted_predictions`` fit ``q`` when the caller has none.

Every estimator is a ratio ``sum(a_i) / sum(b_i)`` of per-sample terms (``b_i = 1`` for IPS and
DR, ``b_i = w_i`` for SNIPS); its confidence interval is the normal approximation
``value +- z * se``. For IPS and DR ``se`` is the standard deviation of the per-sample terms over
``sqrt(N)``; for SNIPS it comes from the delta method for a ratio of means,
``se^2 = var(a_i - value * b_i) / (N mean(b)^2)``, which reduces to the former when ``b = 1``.
With ``bootstrap=B`` the interval is instead the percentile interval of ``B`` resampled
estimates (drawn from a generator seeded with ``seed``) and ``se`` their standard deviation.

``clip`` caps the importance weights of IPS and DR at a value: variance drops but the estimate
becomes biased (downwards for rewards >= 0) whenever a weight is actually clipped.

Evaluating the logging policy itself, every weight is 1 and IPS is the mean reward:

>>> data = LoggedData(rewards=[1.0, 0.0, 1.0, 0.5], logging_propensities=[0.5, 0.25, 0.8, 0.5],
...                   target_probabilities=[0.5, 0.25, 0.8, 0.5])
>>> estimate = ips(data)
>>> estimate.value, estimate.effective_sample_size, estimate.max_weight
(0.625, 4.0, 1.0)

A different target policy, with hand-checked values (weights 2, 2, 0.5, 0):

>>> data = LoggedData(rewards=[1.0, 0.0, 1.0, 0.5], logging_propensities=[0.5, 0.25, 0.8, 0.5],
...                   target_probabilities=[1.0, 0.5, 0.4, 0.0])
>>> print(ips(data))
ips: 0.6250, CI [-0.3025, 1.5525], se 0.4732; n=4, ESS 2.45, max weight 2
>>> round(snips(data).value, 6), ips(data, clip=1.0).value   # 2.5 / 4.5; (1 + 0.5) / 4
(0.555556, 0.375)

Doubly robust needs, for every decision, the reward model's prediction and the target's
probability for every action, and the index of the logged action:

>>> data = LoggedData(rewards=[1.0, 0.0, 1.0, 0.5], logging_propensities=[0.5, 0.25, 0.8, 0.5],
...                   target_probabilities=[1.0, 0.5, 0.4, 0.0],
...                   reward_predictions=[[0.8, 0.2], [0.5, 0.5], [0.6, 0.4], [0.3, 0.9]],
...                   target_distribution=[[1.0, 0.0], [0.5, 0.5], [0.4, 0.6], [1.0, 0.0]],
...                   logged_actions=[0, 1, 0, 1])
>>> sorted(evaluate(data))
['dr', 'ips', 'snips']
>>> round(doubly_robust(data).value, 6)   # mean of 0.8 + 0.4, 0.5 - 1.0, 0.48 + 0.2, 0.3
0.42
"""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist
from typing import Any

import numpy as np

from rewardloop.learning.evaluation.data import FloatArray, LoggedData

# Bootstrap resamples are drawn in blocks of about this many indices, bounding memory at
# ~8 MB whatever N and B are.
_BOOTSTRAP_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Estimate:
    """One estimator's value of the target policy, with its interval and weight diagnostics."""

    name: str
    """Estimator: ``"ips"``, ``"snips"`` or ``"dr"``."""
    value: float
    """Estimated expected reward per decision under the target policy."""
    ci_low: float
    """Lower end of the confidence interval."""
    ci_high: float
    """Upper end of the confidence interval."""
    std_error: float
    """Standard error of ``value`` (delta method for SNIPS, bootstrap s.d. with ``bootstrap``)."""
    effective_sample_size: float
    """``(sum w)^2 / sum w^2`` of the weights used: N when every weight is equal, small when a
    few decisions carry the estimate."""
    n: int
    """Number of logged decisions."""
    max_weight: float
    """Largest importance weight used (after clipping, so at most ``clip``)."""

    def __str__(self) -> str:
        return (
            f"{self.name}: {self.value:.4f}, CI [{self.ci_low:.4f}, {self.ci_high:.4f}], "
            f"se {self.std_error:.4f}; n={self.n}, ESS {self.effective_sample_size:.2f}, "
            f"max weight {self.max_weight:.3g}"
        )


def _check_confidence(confidence: float) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, int | float | np.floating):
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(confidence)


def _check_bootstrap(bootstrap: int | None) -> int | None:
    if bootstrap is None:
        return None
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int | np.integer) or bootstrap < 2:
        raise ValueError(f"bootstrap must be None or an integer >= 2 (resamples), got {bootstrap!r}")
    return int(bootstrap)


def _bootstrap_ratios(numerators: FloatArray, denominators: FloatArray, resamples: int, seed: int) -> FloatArray:
    """``sum(a) / sum(b)`` over ``resamples`` resamples of the decisions with replacement."""
    rng = np.random.default_rng(seed)
    n = numerators.shape[0]
    block = max(1, _BOOTSTRAP_BLOCK // n)
    ratios = np.empty(resamples)
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        rows = rng.integers(0, n, size=(stop - start, n))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios[start:stop] = numerators[rows].sum(axis=1) / denominators[rows].sum(axis=1)
    # A resample may hold only zero-weight decisions (SNIPS): it has no estimate, drop it.
    return ratios[np.isfinite(ratios)]


def _ratio_estimate(
    name: str,
    numerators: FloatArray,
    denominators: FloatArray,
    weights: FloatArray,
    *,
    confidence: float,
    bootstrap: int | None,
    seed: int,
) -> Estimate:
    """``sum(a) / sum(b)`` with a delta-method normal interval, or a bootstrap one."""
    confidence = _check_confidence(confidence)
    resamples = _check_bootstrap(bootstrap)
    n = numerators.shape[0]
    value = float(numerators.sum() / denominators.sum())
    if resamples is None:
        # Delta method: value = mean(a) / mean(b), var ~ var(a - value * b) / (n * mean(b)^2).
        residuals = numerators - value * denominators
        std_error = float(np.std(residuals, ddof=1) / math.sqrt(n) / denominators.mean())
        # The lower tail's quantile: 0.5 + c/2 rounds to 1.0 for c within an ulp of 1 (inv_cdf(1) raises).
        half_width = -NormalDist().inv_cdf((1.0 - confidence) / 2.0) * std_error
        ci_low, ci_high = value - half_width, value + half_width
    else:
        ratios = _bootstrap_ratios(numerators, denominators, resamples, seed)
        std_error = float(np.std(ratios, ddof=1))
        tail = (1.0 - confidence) / 2.0
        ci_low, ci_high = (float(q) for q in np.quantile(ratios, [tail, 1.0 - tail]))
    squared = float(np.sum(weights**2))
    ess = float(weights.sum() ** 2 / squared) if squared > 0.0 else 0.0
    return Estimate(
        name=name,
        value=value,
        ci_low=ci_low,
        ci_high=ci_high,
        std_error=std_error,
        effective_sample_size=ess,
        n=n,
        max_weight=float(weights.max()),
    )


def ips(
    data: LoggedData,
    confidence: float = 0.95,
    *,
    clip: float | None = None,
    bootstrap: int | None = None,
    seed: int = 0,
) -> Estimate:
    """Inverse propensity scoring: ``mean(w_i r_i)``, normal interval on the per-sample terms.

    ``clip`` caps the weights (biased, see the module doc); ``bootstrap=B`` switches to a
    percentile interval over B resamples drawn with ``np.random.default_rng(seed)``.
    """
    weights = data.importance_weights(clip)
    return _ratio_estimate(
        "ips",
        weights * data.rewards,
        np.ones(data.n),
        weights,
        confidence=confidence,
        bootstrap=bootstrap,
        seed=seed,
    )


def snips(
    data: LoggedData,
    confidence: float = 0.95,
    *,
    bootstrap: int | None = None,
    seed: int = 0,
) -> Estimate:
    """Self-normalised IPS: ``sum(w_i r_i) / sum(w_i)``, delta-method interval for the ratio.

    Raises ``ValueError`` when the target gives every logged action probability 0 (no weight).
    """
    weights = data.importance_weights()
    if not np.any(weights > 0.0):
        raise ValueError("target_probabilities are all 0: SNIPS is undefined (no logged action has weight)")
    return _ratio_estimate(
        "snips",
        weights * data.rewards,
        weights,
        weights,
        confidence=confidence,
        bootstrap=bootstrap,
        seed=seed,
    )


def doubly_robust(
    data: LoggedData,
    confidence: float = 0.95,
    *,
    clip: float | None = None,
    bootstrap: int | None = None,
    seed: int = 0,
) -> Estimate:
    """Doubly robust: model's value under the target plus the importance-weighted model error.

    Needs ``reward_predictions``, ``target_distribution`` and ``logged_actions`` in ``data``.
    The interval is normal on the per-sample terms, as for IPS. Give out-of-fold predictions
    (``cross_fitted_predictions``) when the model was fitted on these same logs.
    """
    if data.reward_predictions is None or data.target_distribution is None or data.logged_actions is None:
        raise ValueError("reward_predictions, target_distribution and logged_actions are required by doubly_robust")
    weights = data.importance_weights(clip)
    direct = np.sum(data.target_distribution * data.reward_predictions, axis=1)
    predicted = data.reward_predictions[np.arange(data.n), data.logged_actions]
    return _ratio_estimate(
        "dr",
        direct + weights * (data.rewards - predicted),
        np.ones(data.n),
        weights,
        confidence=confidence,
        bootstrap=bootstrap,
        seed=seed,
    )


def evaluate(
    data: LoggedData,
    confidence: float = 0.95,
    *,
    clip: float | None = None,
    bootstrap: int | None = None,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Every estimator the data supports, keyed by name (``ips``, ``snips``, ``dr``).

    SNIPS is left out when no logged action has weight, DR when its fields are missing.
    ``clip`` applies to IPS and DR only.
    """
    options: dict[str, Any] = {"bootstrap": bootstrap, "seed": seed}
    estimates = {"ips": ips(data, confidence, clip=clip, **options)}
    if np.any(data.target_probabilities > 0.0):
        estimates["snips"] = snips(data, confidence, **options)
    if data.supports_doubly_robust:
        estimates["dr"] = doubly_robust(data, confidence, clip=clip, **options)
    return estimates
