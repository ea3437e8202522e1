"""A reward model ``q(x, a)`` for doubly robust, fitted from the same logged decisions.

``doubly_robust`` needs a prediction for every action in every logged context; this module fits
one with numpy only (a ridge regression per action) and, with ``cross_fitted_predictions``,
without letting a decision's own reward leak into its prediction.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rewardloop.learning.evaluation.data import FloatArray, IndexArray, _indices, _vector


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
