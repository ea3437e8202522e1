"""The logged decisions an off-policy estimate is computed from, checked once on the way in.

Estimators and the reward model trust ``LoggedData`` completely (shapes, ranges, the
doubly-robust fields agreeing with each other), so every check on caller input lives here and
the arithmetic in ``estimators`` and ``reward_model`` stays free of it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.int64]

# Tolerance for probabilities that should sum to 1 or agree with each other (float32 logs).
_PROBABILITY_TOLERANCE = 1e-6


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


def _clip_bound(clip: float) -> float:
    """``clip`` as a float, or ValueError: weights are capped at a positive finite value only."""
    if isinstance(clip, bool) or not isinstance(clip, int | float | np.floating):
        raise ValueError(f"clip must be a positive number, got {clip!r}")
    if not (clip > 0.0 and math.isfinite(clip)):
        raise ValueError(f"clip must be a positive finite number, got {clip}")
    return float(clip)


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
