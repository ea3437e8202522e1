"""Empirical Bayes for the linear policies' prior: how strongly users' coefficients agree.

A linear policy (``bandits/ridge.py``) serves a user from ridge regression toward the population's
coefficients, ``penalty = strength * |theta_user - theta_population|^2`` per arm. That is the
posterior mean of a random-effects model in which each user's coefficients of arm ``a`` are
``theta_a + delta`` with ``delta ~ N(0, tau2 I)`` and rewards ``x . theta_user + noise`` of variance
``sigma2``: the penalty is ``sigma2 / tau2``, in units of ``x x^T`` as ``combine`` counts it.

Both variances are estimated by the method of moments from what the users' states already hold,
per user and arm the Gram matrix ``G = sum x x^T`` and ``b = sum r x``. The score
``d = b - G theta_a`` has ``E[d d^T | G] = tau2 G G + sigma2 G``, so over every (user, arm)::

    sum |d|^2        = tau2 sum tr(G G) + sigma2 sum tr(G)
    sum d^T G^+ d    = tau2 sum tr(G)   + sigma2 sum rank(G)

(``G^+`` the pseudo-inverse; ``G G^+ G = G``), two linear equations in ``tau2`` and ``sigma2``. The
population's ``theta_a`` is the ridge fit of the same users' pooled data. Users whose coefficients
do not differ more than their noise explains (``tau2 <= 0``) get the strongest prior,
``MAX_STRENGTH``.

>>> rng = np.random.default_rng(0)
>>> users, arms, d = 400, 3, 4
>>> theta = rng.normal(0.0, 0.5, (arms, d))
>>> grams, xrs = np.zeros((users, arms, d, d)), np.zeros((users, arms, d))
>>> for u in range(users):
...     for a in range(arms):
...         x = rng.normal(size=(int(rng.integers(1, 12)), d))
...         y = x @ (theta[a] + rng.normal(0.0, 0.2, d)) + rng.normal(0.0, 0.5, len(x))   # tau 0.2, sigma 0.5
...         grams[u, a], xrs[u, a] = x.T @ x, x.T @ y
>>> round(linear_strength(grams, xrs), 1)   # the truth: 0.5**2 / 0.2**2 = 6.25; seeds 1-5 give 4.9-7.4
8.5
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

MIN_STRENGTH = 1.0
MAX_STRENGTH = 10_000.0
"""In units of ``x x^T``: with ``|x|^2 ~ 10``, about a thousand observations' worth."""
MIN_DIRECTIONS = 20
"""Fewest observed directions (the sum of the users' Gram ranks) to estimate from."""
RTOL = 1e-10
"""Relative size below which a Gram matrix's eigenvalue is rounding, not a direction the user played."""


def linear_strength(grams: FloatArray, xrs: FloatArray, ridge: float = 1.0) -> float | None:
    """``sigma2 / tau2`` of users' per-arm states, ``grams`` (users, arms, d, d) and ``xrs`` (users,
    arms, d), clamped to [``MIN_STRENGTH``, ``MAX_STRENGTH``]; None without enough data or when the
    moments do not fit the model (no noise left). ``ridge`` is the policy's, for the pooled fit."""
    grams, xrs = np.asarray(grams, dtype=np.float64), np.asarray(xrs, dtype=np.float64)
    if grams.ndim != 4 or xrs.shape != grams.shape[:3] or grams.shape[2] != grams.shape[3]:
        raise ValueError(f"need grams (users, arms, d, d) and xrs (users, arms, d), got {grams.shape}, {xrs.shape}")
    d = grams.shape[-1]
    pooled = grams.sum(axis=0) + ridge * np.eye(d)
    theta = np.linalg.solve(pooled, xrs.sum(axis=0)[..., None])[..., 0]  # (arms, d)
    played = np.trace(grams, axis1=2, axis2=3) > 0
    g, b = grams[played], xrs[played]
    if not len(g):
        return None
    ranks = np.linalg.matrix_rank(g, hermitian=True, rtol=RTOL)
    if int(ranks.sum()) < MIN_DIRECTIONS:
        return None
    thetas = np.broadcast_to(theta, (*played.shape, d))[played]
    scores = b - np.einsum("nij,nj->ni", g, thetas)
    moments = np.array(
        [
            (scores * scores).sum(),
            np.einsum("ni,nij,nj->", scores, np.linalg.pinv(g, hermitian=True, rtol=RTOL), scores),
        ]
    )
    traces = np.trace(g, axis1=1, axis2=2)
    system = np.array([[np.einsum("nij,nji->", g, g), traces.sum()], [traces.sum(), float(ranks.sum())]])
    try:
        tau2, sigma2 = np.linalg.solve(system, moments)
    except np.linalg.LinAlgError:
        return None
    if not sigma2 > 0.0:
        return None
    strength = MAX_STRENGTH if tau2 <= 0.0 else sigma2 / tau2
    return float(np.clip(strength, MIN_STRENGTH, MAX_STRENGTH))
