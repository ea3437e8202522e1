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
  variance shrinks as ``q`` gets better; ``fit_reward_model`` / ``cross_fitted_predictions``
  fit ``q`` when the caller has none.

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
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.int64]

# Bootstrap resamples are drawn in blocks of about this many indices, bounding memory at
# ~8 MB whatever N and B are.
_BOOTSTRAP_BLOCK = 1 << 20
# Tolerance for probabilities that should sum to 1 or agree with each other (float32 logs).
_PROBABILITY_TOLERANCE = 1e-6


# --- the logged data ---------------------------------------------------------------------------


def _vector(name: str, value: object, n: int | None = None) -> FloatArray:
    array = np.array(value, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one entry per decision), got shape {array.shape}")
    if n is not None and array.shape[0] != n:
        raise ValueError(f"{name} must have {n} entries (one per reward), got {array.shape[0]}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got NaN or infinity")
    return array


def _matrix(name: str, value: object, n: int) -> FloatArray:
    array = np.array(value, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != n or array.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, n_actions) with N={n}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got NaN or infinity")
    return array


def _indices(name: str, value: object, n: int, n_actions: int) -> IndexArray:
    array = np.array(value)
    if array.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {array.shape}")
    if array.dtype.kind not in "iu" and not (
        array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array))
    ):
        raise ValueError(f"{name} must hold integer action indices, got dtype {array.dtype}")
    indices = array.astype(np.int64)
    if np.any(indices < 0) or np.any(indices >= n_actions):
        raise ValueError(f"{name} must be in [0, {n_actions}), got values in [{indices.min()}, {indices.max()}]")
    return indices


def _in_range(name: str, array: FloatArray, low: float, high: float, *, open_low: bool = False) -> None:
    below = np.any(array <= low) if open_low else np.any(array < low)
    if below or np.any(array > high):
        bounds = f"({low}, {high}]" if open_low else f"[{low}, {high}]"
        raise ValueError(f"{name} must be in {bounds}, got values in [{array.min()}, {array.max()}]")


def _frozen(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    array.flags.writeable = False
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class LoggedData:
    """Logged single-slot decisions, validated; arrays are stored as read-only copies.

    The three doubly-robust fields go together: give all of them or none.
    """

    rewards: FloatArray
    """(N,) observed reward of each decision, in [0, 1]; N >= 2."""
    logging_propensities: FloatArray
    """(N,) probability the logging policy had of the logged action, in (0, 1]."""
    target_probabilities: FloatArray
    """(N,) probability the target policy gives the logged action in the same context, in [0, 1]."""
    reward_predictions: FloatArray | None = None
    """(N, A) reward model ``q(x_i, a)`` for every action (doubly robust only)."""
    target_distribution: FloatArray | None = None
    """(N, A) target policy's distribution over actions in each context; rows sum to 1 (DR only)."""
    logged_actions: IndexArray | None = None
    """(N,) index into A of the logged action (doubly robust only)."""

    def __post_init__(self) -> None:
        rewards = _vector("rewards", self.rewards)
        n = rewards.shape[0]
        if n < 2:
            raise ValueError(f"rewards must hold at least 2 decisions to estimate an error, got {n}")
        _in_range("rewards", rewards, 0.0, 1.0)
        propensities = _vector("logging_propensities", self.logging_propensities, n)
        _in_range("logging_propensities", propensities, 0.0, 1.0, open_low=True)
        target = _vector("target_probabilities", self.target_probabilities, n)
        _in_range("target_probabilities", target, 0.0, 1.0)
        for field, value in (
            ("rewards", rewards),
            ("logging_propensities", propensities),
            ("target_probabilities", target),
        ):
            object.__setattr__(self, field, _frozen(value))
        self._set_doubly_robust_fields(n, target)

    def _set_doubly_robust_fields(self, n: int, target: FloatArray) -> None:
        fields = ("reward_predictions", "target_distribution", "logged_actions")
        given = [field for field in fields if getattr(self, field) is not None]
        if not given:
            return
        if len(given) < len(fields):
            missing = ", ".join(field for field in fields if field not in given)
            raise ValueError(f"{missing} must be given along with {', '.join(given)} (doubly robust)")
        predictions = _matrix("reward_predictions", self.reward_predictions, n)
        n_actions = predictions.shape[1]
        distribution = _matrix("target_distribution", self.target_distribution, n)
        if distribution.shape != predictions.shape:
            raise ValueError(
                f"target_distribution must have the shape of reward_predictions {predictions.shape}, "
                f"got {distribution.shape}"
            )
        _in_range("target_distribution", distribution, 0.0, 1.0)
        row_sums = distribution.sum(axis=1)
        if not np.allclose(row_sums, 1.0, rtol=0.0, atol=_PROBABILITY_TOLERANCE):
            worst = row_sums[np.argmax(np.abs(row_sums - 1.0))]
            raise ValueError(f"target_distribution rows must sum to 1, got a row summing to {worst}")
        actions = _indices("logged_actions", self.logged_actions, n, n_actions)
        logged = distribution[np.arange(n), actions]
        if not np.allclose(logged, target, rtol=0.0, atol=_PROBABILITY_TOLERANCE):
            row = int(np.argmax(np.abs(logged - target)))
            raise ValueError(
                f"target_probabilities must equal target_distribution at logged_actions, row {row}: "
                f"{target[row]} != {logged[row]}"
            )
        object.__setattr__(self, "reward_predictions", _frozen(predictions))
        object.__setattr__(self, "target_distribution", _frozen(distribution))
        object.__setattr__(self, "logged_actions", _frozen(actions))

    @property
    def n(self) -> int:
        """Number of logged decisions."""
        return int(self.rewards.shape[0])

    @property
    def supports_doubly_robust(self) -> bool:
        """Whether the reward model, target distribution and logged actions were given."""
        return self.reward_predictions is not None

    def importance_weights(self, clip: float | None = None) -> FloatArray:
        """``target / logging`` per decision, capped at ``clip`` when given."""
        weights = self.target_probabilities / self.logging_propensities
        return weights if clip is None else np.minimum(weights, _clip_bound(clip))


# --- estimates -------------------------------------------------------------------------------


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


def _clip_bound(clip: float) -> float:
    if isinstance(clip, bool) or not isinstance(clip, int | float | np.floating):
        raise ValueError(f"clip must be a positive number, got {clip!r}")
    if not (clip > 0.0 and math.isfinite(clip)):
        raise ValueError(f"clip must be a positive finite number, got {clip}")
    return float(clip)


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


# --- a reward model for doubly robust --------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class RewardModel:
    """Per-action linear reward model ``q(x, a) = mean_reward + x . coef[a] + intercept[a]``.

    Predictions are clipped to [0, 1], the reward range, which can only reduce their error.
    """

    coefficients: FloatArray
    """(A, d) weights per action."""
    intercepts: FloatArray
    """(A,) offsets per action, relative to ``mean_reward``."""
    mean_reward: float
    """Mean logged reward, the prediction for an action never logged."""

    def predict(self, contexts: object) -> FloatArray:
        """(M, A) predicted reward of every action in each of M contexts (M, d)."""
        x = np.array(contexts, dtype=np.float64)
        d = self.coefficients.shape[1]
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(f"contexts must have shape (M, {d}), got {x.shape}")
        raw = self.mean_reward + x @ self.coefficients.T + self.intercepts
        return np.clip(raw, 0.0, 1.0)


def _check_training_data(
    contexts: object, actions: object, rewards: object, n_actions: int, ridge: float
) -> tuple[FloatArray, IndexArray, FloatArray]:
    if isinstance(n_actions, bool) or not isinstance(n_actions, int | np.integer) or n_actions < 1:
        raise ValueError(f"n_actions must be an integer >= 1, got {n_actions!r}")
    if isinstance(ridge, bool) or not isinstance(ridge, int | float | np.floating) or not ridge > 0.0:
        raise ValueError(f"ridge must be a positive number, got {ridge!r}")
    y = _vector("rewards", rewards)
    n = y.shape[0]
    x = np.array(contexts, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != n:
        raise ValueError(f"contexts must have shape (N, d) with N={n} (one row per reward), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("contexts must be finite, got NaN or infinity")
    return x, _indices("actions", actions, n, int(n_actions)), y


def _fit(x: FloatArray, actions: IndexArray, y: FloatArray, n_actions: int, ridge: float) -> RewardModel:
    mean_reward = float(y.mean())
    d = x.shape[1]
    coefficients = np.zeros((n_actions, d))
    intercepts = np.zeros(n_actions)
    # Every coefficient, intercept included, is shrunk towards 0, i.e. predictions towards the
    # mean reward: an action with few logs borrows from the others instead of fitting noise.
    penalty = ridge * np.eye(d + 1)
    for action in range(n_actions):
        rows = actions == action
        design = np.column_stack([x[rows], np.ones(int(rows.sum()))])
        solution = np.linalg.solve(design.T @ design + penalty, design.T @ (y[rows] - mean_reward))
        coefficients[action], intercepts[action] = solution[:d], solution[d]
    return RewardModel(coefficients=coefficients, intercepts=intercepts, mean_reward=mean_reward)


def fit_reward_model(
    contexts: object, actions: object, rewards: object, n_actions: int, ridge: float = 1.0
) -> RewardModel:
    """Ridge regression of reward on context, one per action, from logged decisions (numpy only).

    >>> model = fit_reward_model([[0.0], [1.0], [0.0], [1.0]], [0, 0, 1, 1], [0.0, 1.0, 1.0, 1.0],
    ...                          n_actions=2, ridge=1e-9)
    >>> model.predict([[0.0], [1.0]]).round(6).tolist()
    [[0.0, 1.0], [1.0, 1.0]]
    """
    x, indices, y = _check_training_data(contexts, actions, rewards, n_actions, ridge)
    return _fit(x, indices, y, int(n_actions), float(ridge))


def cross_fitted_predictions(
    contexts: object,
    actions: object,
    rewards: object,
    n_actions: int,
    ridge: float = 1.0,
    *,
    folds: int = 2,
    seed: int = 0,
) -> FloatArray:
    """(N, A) out-of-fold predictions of ``fit_reward_model`` for the logged contexts.

    The decisions are split at random (``np.random.default_rng(seed)``) into ``folds`` parts;
    each part is predicted by a model fitted on the others, so no decision's own reward leaks
    into its prediction — the in-sample fit would correlate ``q`` with the residual DR weights,
    biasing it (Chernozhukov et al. 2018, double/debiased machine learning).
    """
    x, indices, y = _check_training_data(contexts, actions, rewards, n_actions, ridge)
    n = y.shape[0]
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or not 2 <= folds <= n:
        raise ValueError(f"folds must be an integer in [2, {n}], got {folds!r}")
    fold_of = np.random.default_rng(seed).permutation(n) % folds
    predictions = np.empty((n, int(n_actions)))
    for fold in range(folds):
        held_out = fold_of == fold
        model = _fit(x[~held_out], indices[~held_out], y[~held_out], int(n_actions), float(ridge))
        predictions[held_out] = model.predict(x[held_out])
    return predictions
