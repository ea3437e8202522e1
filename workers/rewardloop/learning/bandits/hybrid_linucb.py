"""Hybrid LinUCB: coefficients shared by all arms through item features, plus per-arm ones.

Li, Chu, Langford & Schapire (2010), "A contextual-bandit approach to personalized news
article recommendation", WWW (Algorithm 2). With context x (length d) and item features f_a
(length k, ``arm_features[a]``), the reward of arm a is modelled as::

    r ~ z_a . beta + x . theta_a,      z_a = vec(outer(x, f_a)) = x (kron) f_a   (length d k)

``beta`` is learned from every arm's rewards, so an arm the user never saw gets a prediction
from items with similar features; ``theta_a`` is the disjoint LinUCB part. Both are fitted
jointly by ridge regression (penalty ``ridge`` on each), and arm a scores::

    score_a = z_a . beta + x . theta_a + alpha * sqrt(s_a)
    s_a = z^T A0^-1 z - 2 z^T A0^-1 B_a^T A_a^-1 x + x^T A_a^-1 x + x^T A_a^-1 B_a A0^-1 B_a^T A_a^-1 x

with Algorithm 2's ``A_a = ridge I + sum x x^T``, ``B_a = sum x z^T``, ``b_a = sum r x`` and
``A0 = ridge I + sum z z^T - sum_a B_a^T A_a^-1 B_a``, ``b0 = sum r z - sum_a B_a^T A_a^-1 b_a``.

Include a constant 1 among the item features, as Li et al. do: then ``beta`` holds a copy of
x's own coefficients shared by all arms. Without it a reward level common to all arms can only
be fitted through ``f_a``-weighted terms and leaks into the predictions for unseen arms (in
the test of this generalisation, regret 0.17-0.78 of uniform instead of 0.01-0.18).

Because z_a is x (kron) f_a and f_a is fixed per arm, every shared statistic is a Kronecker
product of per-arm ones: ``B_a = G_a (kron) f_a^T``, ``sum z z^T = sum_a G_a (kron) f_a f_a^T``,
``sum r z = sum_a b_a (kron) f_a`` (G_a the arm's Gram matrix). So the state stores only the
per-arm ``counts``, ``gram`` and ``xr`` of ridge.py, additive (``merge`` is a sum) and
n_arms * d * (d + 1) floats rather than n_arms * d * d k for the B_a; a decision rebuilds A0
in O(n_arms d^2 k^2), e.g.::

    A0 = ridge I + sum_a (G_a - G_a A_a^-1 G_a) (kron) f_a f_a^T
    s_a = x^T A_a^-1 x + w_a^T A0^-1 w_a,   w_a = (x - G_a A_a^-1 x) (kron) f_a

the same numbers as Algorithm 2's incremental updates (a test checks it against a literal
implementation). ``combine`` pulls both parts toward the prior's, as ridge.py describes: the
per-arm part for arms the prior has data on, the shared part whenever it has any. Those pseudo-
observations sit in their own arrays, ``prior_strength`` (n_arms), ``prior_pull``
(n_arms, d), ``shared_prior_strength`` (1) and ``shared_prior_pull`` (d k), zero in any state
updates produce, because adding them to ``gram`` would leak into the cross terms B_a.

>>> import numpy as np
>>> from rewardloop.learning.bandits import HybridLinUCB, make_policy
>>> features = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])  # arms 0 and 1 are alike
>>> policy = make_policy(HybridLinUCB(alpha=0.1), n_arms=3, context_dim=1, arm_features=features)
>>> state = policy.new_state()
>>> for _ in range(30):
...     policy.update(state, arm=0, reward=1.0, context=np.array([1.0]))
...     policy.update(state, arm=2, reward=0.0, context=np.array([1.0]))
>>> policy.coefficients(state).round(2).ravel().tolist()  # arm 1, never played, learns from arm 0
[0.98, 0.49, 0.0]
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from rewardloop.learning.bandits.ridge import RidgeConfig, RidgePolicy
from rewardloop.learning.bandits.slates import FloatArray, IndexArray, SlotRule, uniform_over_maxima
from rewardloop.learning.bandits.state import PolicyState
from rewardloop.learning.params import positive


@dataclasses.dataclass(frozen=True, kw_only=True)
class HybridLinUCB(RidgeConfig):
    """Hyper-parameters of hybrid LinUCB (and ``ridge``, from RidgeConfig, on both parts)."""

    name: ClassVar[str] = "hybrid_linucb"

    alpha: float = 1.0
    """Width of the confidence bonus, > 0, as in LinUCB."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("alpha", positive)


class HybridLinUCBPolicy(RidgePolicy[HybridLinUCB]):
    # Not per arm: kept whole at rest.
    whole_arrays = frozenset({"shared_prior_strength", "shared_prior_pull"})

    def __init__(
        self,
        config: HybridLinUCB,
        n_arms: int,
        context_dim: int = 0,
        arm_features: npt.ArrayLike | None = None,
    ) -> None:
        super().__init__(config, n_arms, context_dim, arm_features)
        if arm_features is None:
            raise ValueError(
                "arm_features is required by hybrid_linucb: an (n_arms, k) array of item features",
            )
        try:
            features = np.array(arm_features, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"arm_features must be an (n_arms, k) array of floats: {exc}") from None
        if features.ndim != 2 or features.shape[0] != self.n_arms or features.shape[1] < 1:
            raise ValueError(
                f"arm_features must have shape ({self.n_arms}, k) with k >= 1, got {features.shape}",
            )
        if not np.isfinite(features).all():
            raise ValueError("arm_features must be finite")
        features.flags.writeable = False
        self.arm_features = features
        k = features.shape[1]
        self.shared_dim = self.context_dim * k
        self._feature_outer = (features[:, :, None] * features[:, None, :]).reshape(self.n_arms, k * k)

    def new_state(self) -> PolicyState:
        state = super().new_state()
        state.arrays["prior_strength"] = np.zeros(self.n_arms)
        state.arrays["prior_pull"] = np.zeros((self.n_arms, self.context_dim))
        state.arrays["shared_prior_strength"] = np.zeros(1)
        state.arrays["shared_prior_pull"] = np.zeros(self.shared_dim)
        return state

    # --- the joint ridge regression -------------------------------------------------------

    def _arm_solve(self, state: PolicyState, context: FloatArray | None) -> FloatArray:
        """Per arm, ``A_a^-1 [G_a | b_a | x]`` (the x column only with a context)."""
        gram, d = state.arrays["gram"], self.context_dim
        design = gram.copy()
        diagonal = np.arange(d)
        design[:, diagonal, diagonal] += (self.config.ridge + state.arrays["prior_strength"])[:, None]
        columns = [gram, (state.arrays["xr"] + state.arrays["prior_pull"])[..., None]]
        if context is not None:
            columns.append(np.broadcast_to(context[:, None], (self.n_arms, d, 1)))
        return np.asarray(np.linalg.solve(design, np.concatenate(columns, axis=-1)))

    def _shared_system(self, state: PolicyState, solved: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``(A0, b0)`` of the shared coefficients, from the per-arm solutions."""
        gram, xr, features = state.arrays["gram"], state.arrays["xr"], self.arm_features
        m, d, k = self.n_arms, self.context_dim, features.shape[1]
        reduced = gram - gram @ solved[..., :d]  # G_a - G_a A_a^-1 G_a
        reduced_target = xr - (gram @ solved[..., d : d + 1])[..., 0]  # xr_a - G_a A_a^-1 b_a
        shared = (reduced.reshape(m, d * d).T @ self._feature_outer).reshape(d, d, k, k)
        design = shared.transpose(0, 2, 1, 3).reshape(self.shared_dim, self.shared_dim)
        diagonal = np.arange(self.shared_dim)
        design[diagonal, diagonal] += self.config.ridge + state.arrays["shared_prior_strength"][0]
        target = (reduced_target.T @ features).ravel() + state.arrays["shared_prior_pull"]
        return design, target

    def _parts(self, state: PolicyState) -> tuple[FloatArray, FloatArray]:
        """The fitted shared ``beta`` (length d k) and per-arm ``theta`` (n_arms x d)."""
        solved = self._arm_solve(state, context=None)
        beta = np.asarray(np.linalg.solve(*self._shared_system(state, solved)), dtype=np.float64)
        return beta, self._theta(solved, beta, np.arange(self.n_arms))

    def _theta(self, solved: FloatArray, beta: FloatArray, arms: IndexArray) -> FloatArray:
        """theta_a = A_a^-1 (b_a - B_a beta), where B_a beta = G_a W f_a for W = beta as d x k."""
        d = self.context_dim
        shared = self.arm_features[arms] @ beta.reshape(d, -1).T  # rows W f_a
        return np.asarray(solved[arms, :, d] - (solved[arms, :, :d] @ shared[..., None])[..., 0])

    def coefficients(self, state: PolicyState, arms: IndexArray | None = None) -> FloatArray:
        """Each arm's total coefficients on x, ``theta_a + W f_a`` (W: beta as a d x k matrix)."""
        beta, theta = self._parts(state)
        total = theta + self.arm_features @ beta.reshape(self.context_dim, -1).T
        return total if arms is None else total[arms]

    def fit(self, state: PolicyState, arms: IndexArray, context: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Per arm of ``arms``: the predicted reward and the variance term ``s_a``, at context x."""
        d = self.context_dim
        solved = self._arm_solve(state, context)
        design, target = self._shared_system(state, solved)
        spread = solved[arms, :, d + 1]  # A_a^-1 x
        residual = context - (state.arrays["gram"][arms] @ spread[..., None])[..., 0]
        w = (residual[:, :, None] * self.arm_features[arms][:, None, :]).reshape(len(arms), self.shared_dim)
        shared_solved = np.asarray(np.linalg.solve(design, np.concatenate((target[:, None], w.T), axis=1)))
        beta = shared_solved[:, 0]
        theta = self._theta(solved, beta, arms)
        z = (context[:, None] * self.arm_features[arms][:, None, :]).reshape(len(arms), self.shared_dim)
        means = (z * beta).sum(axis=-1) + (theta * context).sum(axis=-1)
        variances = (spread * context).sum(axis=-1) + (w.T * shared_solved[:, 1:]).sum(axis=0)
        return means, np.maximum(variances, 0.0)

    # --- deciding and priors -------------------------------------------------------------

    def _slate_rule(
        self, state: PolicyState, available: IndexArray, rng: np.random.Generator, context: FloatArray
    ) -> SlotRule:
        means, variances = self.fit(state, available, context)
        scores = means + self.config.alpha * np.sqrt(variances)

        def slot(remaining: IndexArray) -> tuple[FloatArray, FloatArray]:
            return scores[remaining], uniform_over_maxima(scores[remaining])

        return slot

    def _combine(self, state: PolicyState, prior: PolicyState, strength: float | FloatArray) -> PolicyState:
        assert not isinstance(strength, np.ndarray)  # one strength: ``per_arm_strength`` is False
        combined = state.copy()
        known = np.flatnonzero(prior.arrays["counts"] > 0)
        if known.size:
            beta, theta = self._parts(prior)
            combined.arrays["counts"][known] += strength
            combined.arrays["prior_strength"][known] += strength
            combined.arrays["prior_pull"][known] += strength * theta[known]
            combined.arrays["shared_prior_strength"] += strength
            combined.arrays["shared_prior_pull"] += strength * beta
        return combined

    def _check_values(self, state: PolicyState) -> None:
        super()._check_values(state)
        if any(state.arrays[name].any() for name in _PRIOR_ARRAYS):
            raise ValueError(
                f"corrupt {self.name} policy state: prior pseudo-observations in a stored state "
                "(combine() results are for select only)"
            )


_PRIOR_ARRAYS = ("prior_strength", "prior_pull", "shared_prior_strength", "shared_prior_pull")
