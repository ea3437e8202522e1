"""Discounted LinUCB (D-LinUCB): per-arm ridge regression that forgets, for drifting rewards.

Russac, Vernade & Cappé (2019), "Weighted linear bandits for non-stationary environments",
NeurIPS (Algorithm 1, D-LinUCB), applied per arm as in disjoint LinUCB. Every update first
discounts every arm's statistics, then adds the observation to the played arm::

    V_a  = gamma   V_a  + [a played] x x^T + (1 - gamma)   ridge I
    V~_a = gamma^2 V~_a + [a played] x x^T + (1 - gamma^2) ridge I
    b_a  = gamma   b_a  + [a played] r x

so ``V_a = ridge * I + sum_k gamma^k x_k x_k^T`` keeps its regularisation while old
observations fade. The score uses the paper's variance term, which accounts for the weights::

    theta_a = V_a^-1 b_a,    score_a = x . theta_a + alpha * sqrt(x^T V_a^-1 V~_a V_a^-1 x)

(with gamma -> 1 this is LinUCB). All arms are discounted on every update, not only the one
played: discounting is the policy's clock, as in D-UCB, so an arm left alone loses confidence
and is explored again, where discounting only played arms would keep stale estimates of the
others forever. A per-user bandit sees few updates, so the default 0.99 (a memory of about 100
updates across all arms) forgets slowly there. As in ridge.py only the parts beyond
``ridge * I`` are stored: ``counts`` (discounted), ``gram`` (V - ridge I), ``gram_sq``
(V~ - ridge I) and ``xr`` (b). Discounting is per update, so replay is exact;
``supports_prior`` is False (a population's discounted statistics only describe its last few
hundred events).

>>> import numpy as np
>>> from rewardloop.learning.bandits import DiscountedLinUCB, make_policy
>>> policy = make_policy(DiscountedLinUCB(gamma=0.5, alpha=1.0), n_arms=2, context_dim=1)
>>> state = policy.new_state()
>>> x = np.array([1.0])
>>> for reward in [1.0, 0.0]:
...     policy.update(state, arm=0, reward=reward, context=x)
>>> [state.arrays[name].ravel().tolist() for name in ("gram", "gram_sq", "xr")]
[[1.5, 0.0], [1.25, 0.0], [0.5, 0.0]]
>>> for choice in policy.select(state, np.arange(2), n=2, rng=np.random.default_rng(0), context=x):
...     print(choice.arm, round(choice.score, 4))  # 0.5 / 2.5 + sqrt(2.25) / 2.5
1 1.0
0 0.8
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from rewardloop.learning.bandits.ridge import RidgeConfig, RidgePolicy
from rewardloop.learning.bandits.slates import FloatArray, IndexArray, SlotRule, uniform_over_maxima
from rewardloop.learning.bandits.state import PolicyState
from rewardloop.learning.params import discount, positive


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiscountedLinUCB(RidgeConfig):
    """Hyper-parameters of discounted LinUCB (and ``ridge``, from RidgeConfig)."""

    name: ClassVar[str] = "discounted_linucb"

    alpha: float = 1.0
    """Width of the confidence bonus, > 0, as in LinUCB."""
    gamma: float = 0.99
    """Discount per update, in (0, 1); about 1 / (1 - gamma) updates are remembered."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("alpha", positive)
        self._set("gamma", discount)


class DiscountedLinUCBPolicy(RidgePolicy[DiscountedLinUCB]):
    supports_prior = False

    def new_state(self) -> PolicyState:
        state = super().new_state()
        state.arrays["gram_sq"] = np.zeros_like(state.arrays["gram"])
        return state

    def _update(
        self,
        state: PolicyState,
        arm: int,
        reward: float,
        context: FloatArray,
        propensity: float,
    ) -> None:
        gamma = self.config.gamma
        for name, factor in (("counts", gamma), ("gram", gamma), ("gram_sq", gamma * gamma), ("xr", gamma)):
            state.arrays[name] *= factor
        outer = np.outer(context, context)
        state.arrays["counts"][arm] += 1.0
        state.arrays["gram"][arm] += outer
        state.arrays["gram_sq"][arm] += outer
        state.arrays["xr"][arm] += reward * context

    def _revise(
        self, state: PolicyState, arm: int, delta: float, context: FloatArray, propensity: float, age: int
    ) -> None:
        state.arrays["xr"][arm] += (delta * self.config.gamma**age) * context

    def _slate_rule(
        self, state: PolicyState, available: IndexArray, rng: np.random.Generator, context: FloatArray
    ) -> SlotRule:
        design = self._design(state.arrays["gram"][available])
        targets = np.stack(
            (state.arrays["xr"][available], np.broadcast_to(context, (len(available), len(context)))), -1
        )
        solved = np.linalg.solve(design, targets)
        means = (solved[..., 0] * context).sum(axis=-1)
        spread = solved[..., 1]  # V^-1 x
        weighted = (self._design(state.arrays["gram_sq"][available]) * spread[:, None, :]).sum(axis=-1)
        scores = means + self.config.alpha * np.sqrt(np.maximum((weighted * spread).sum(axis=-1), 0.0))

        def slot(remaining: IndexArray) -> tuple[FloatArray, FloatArray]:
            return scores[remaining], uniform_over_maxima(scores[remaining])

        return slot

    def _check_values(self, state: PolicyState) -> None:
        self._check_regression(state, grams=("gram", "gram_sq"))
        total, bound = state.arrays["counts"].sum(), min(state.n_updates, 1.0 / (1.0 - self.config.gamma))
        if total > bound * (1.0 + 1e-9):
            raise ValueError(
                f"corrupt {self.name} policy state: discounted counts sum to {total}, more than {bound}",
            )
