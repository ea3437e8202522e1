"""Empirical Bayes for rates: how strongly a group's rates agree, estimated from the group.

Units (users of a segment) each have a true rate ``p_u`` for an arm; we see ``x_u`` rewards in
``n_u`` plays. If the ``p_u`` are ``Beta(k m, k (1 - m))`` (mean ``m``, strength ``k``: worth ``k``
observations), the observed rate ``x_u / n_u`` has variance ``tau2 + (v - tau2) / n_u`` with
``v = m (1 - m)`` and between-unit variance ``tau2 = v / (k + 1)``. The method of moments inverts
that (Kleinman 1973; D. Robinson, *Introduction to Empirical Bayes*): with ``S`` the spread of the
observed rates around ``m`` and ``h`` the mean of ``1 / n_u``,

    tau2 = (S - v h) / (1 - h),   k = v / tau2 - 1.

``pooled_strength`` pools ``tau2`` and ``v`` over arms, each unit weighing ``1 - 1 / n_u`` (a single
play says nothing about spread), and clamps ``k`` to [``MIN_STRENGTH``, ``MAX_STRENGTH``]: rates no
more spread than their noise mean the units agree, the strongest prior. With fewer than
``MIN_UNITS`` units of two plays or more there is no estimate.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> p = rng.beta(0.1 * 20, 0.9 * 20, size=(3000, 4))       # 4 arms, mean 0.1, strength 20
>>> n = rng.integers(1, 30, size=(3000, 4)).astype(float)
>>> x = rng.binomial(n.astype(int), p).astype(float)
>>> 15 < pooled_strength(x, n) < 26
True
>>> prior = beta_prior(x[:, 0], n[:, 0])
>>> round(prior.mean, 2), 12 < prior.strength < 30
(0.1, True)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

MIN_STRENGTH = 1.0
MAX_STRENGTH = 1000.0
MIN_UNITS = 5


class BetaPrior(NamedTuple):
    mean: float
    """The group's mean rate, in (0, 1)."""
    strength: float
    """How many observations the group's mean is worth for one unit (``k``)."""


def beta_prior(successes: ArrayLike, trials: ArrayLike) -> BetaPrior | None:
    """Mean and strength of one arm's rates over units (the columns of ``pooled_strength``, one at a time)."""
    x, n = _as_columns(successes, trials)
    strength = pooled_strength(x, n)
    if strength is None:
        return None
    seen = n[:, 0] > 0
    total = float(n[seen, 0].sum())
    mean = float(np.clip(x[seen, 0].sum() / total, 0.5 / total, 1.0 - 0.5 / total))
    return BetaPrior(mean, strength)


def pooled_strength(successes: ArrayLike, trials: ArrayLike) -> float | None:
    """The strength ``k`` of the units' agreement, pooled over arms; None without enough data.

    ``successes`` and ``trials`` have shape (units, arms) (or (units,) for one arm); rewards may be
    fractional, in [0, 1]; units that never played an arm are left out of that arm.
    """
    x, n = _as_columns(successes, trials)
    if int((n >= 2).any(axis=1).sum()) < MIN_UNITS:
        return None
    # Per arm, over the units that played it (vectorised over arms).
    played = n > 0
    units = played.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.where(played, x / n, 0.0)
        mean = rates.sum(axis=0) / units
        v = mean * (1.0 - mean)
        weights = np.where(played, 1.0 - 1.0 / n, 0.0).sum(axis=0)
        spread = np.where(played, (rates - mean) ** 2, 0.0).sum(axis=0) / units
        share = np.where(played, 1.0 / n, 0.0).sum(axis=0) / units  # h: how much of the spread is binomial noise
        tau2 = (spread - v * share) / (1.0 - share)
        usable = (units >= 2) & (v > 0.0) & (weights > 0.0)
        between = float(np.where(usable, weights * tau2, 0.0).sum())
        noise = float(np.where(usable, weights * v, 0.0).sum())
    if noise <= 0.0:
        return None
    ratio = between / noise  # tau2 / v = 1 / (k + 1)
    strength = MAX_STRENGTH if ratio <= 0.0 else 1.0 / ratio - 1.0
    return float(np.clip(strength, MIN_STRENGTH, MAX_STRENGTH))


def _as_columns(successes: ArrayLike, trials: ArrayLike) -> tuple[FloatArray, FloatArray]:
    x, n = np.asarray(successes, dtype=np.float64), np.asarray(trials, dtype=np.float64)
    if x.shape != n.shape:
        raise ValueError(f"successes and trials must have one shape, got {x.shape} and {n.shape}")
    if x.ndim == 1:
        x, n = x[:, None], n[:, None]
    if x.ndim != 2:
        raise ValueError(f"successes must be (units,) or (units, arms), got shape {x.shape}")
    if np.any(n < 0) or np.any(x < 0) or np.any(x > n + 1e-9):
        raise ValueError("need 0 <= successes <= trials")
    return x, n
