"""Discounted UCB (D-UCB): UCB over exponentially discounted counts, for rewards that drift.

Garivier & Moulines (2011), "On upper-confidence bound policies for switching bandit
problems", ALT (arXiv:0805.3415). Every update first multiplies every arm's count and reward
sum by ``gamma``, then adds the new observation, so an observation ``k`` updates old weighs
``gamma**k``: the policy remembers about ``1 / (1 - gamma)`` updates (50 for 0.98). With
``N_i`` the discounted count of arm i and ``N`` their total::

    score_i = discounted_mean_i + c * sqrt(ln(max(N, 1)) / N_i)

An arm's count shrinks while it is not played, so its bonus grows until it is tried again:
that is how D-UCB notices a change. Arms never played score ``+inf``. Ties are split
uniformly (propensity ``1 / ties``), as in UCB1.

Discounting is per update (a step), not per second: replaying the feedback log gives
bit-identical state, and a user who is away for a week has not "forgotten" anything. A
per-user bandit sees few steps, so even 0.98 forgets slowly there. The discounted statistics
of a population are dominated by its latest few dozen events, not a prior worth sharing, so
``supports_prior`` is False.

>>> import numpy as np
>>> from rewardloop.learning.bandits import DiscountedUCB, make_policy
>>> policy = make_policy(DiscountedUCB(gamma=0.5, c=1.0), n_arms=3)
>>> state = policy.new_state()
>>> for arm, reward in [(0, 1.0), (1, 1.0), (1, 0.0)]:
...     policy.update(state, arm, reward)
>>> state.arrays["counts"].tolist(), state.arrays["reward_sums"].tolist()
([0.25, 1.5, 0.0], [0.25, 0.5, 0.0])
>>> for choice in policy.select(state, available=np.arange(3), n=3, rng=np.random.default_rng(0)):
...     print(choice.arm, round(choice.score, 4))  # N = 1.75: 1 + sqrt(ln 1.75 / 0.25)
2 inf
0 2.4961
1 0.9441
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np

from rewardloop.learning.bandits.base import Policy, PolicyConfig
from rewardloop.learning.bandits.slates import FloatArray, IndexArray, SlotRule, uniform_over_maxima
from rewardloop.learning.bandits.state import PolicyState, check_discounted_counts
from rewardloop.learning.params import discount, positive


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiscountedUCB(PolicyConfig):
    """Hyper-parameters of discounted UCB."""

    name: ClassVar[str] = "discounted_ucb"

    gamma: float = 0.98
    """Discount per update, in (0, 1); the policy remembers about 1 / (1 - gamma) updates."""
    c: float = 0.5
    """Width of the confidence bonus, > 0. Garivier & Moulines analyse 2 sqrt(xi), xi > 1/2
    (> 1.41); with gamma = 0.98 that never stops exploring: in the drift test the new best arm
    gets 0.81 of the last 500 steps with 0.5, 0.66 with 1.0 and 0.30 with 1.55."""

    def __post_init__(self) -> None:
        self._set("gamma", discount)
        self._set("c", positive)


class DiscountedUCBPolicy(Policy[DiscountedUCB]):
    def _update(
        self,
        state: PolicyState,
        arm: int,
        reward: float,
        context: FloatArray,
        propensity: float,
    ) -> None:
        self._update_discounted(state, arm, reward, self.config.gamma)

    def _revise(
        self, state: PolicyState, arm: int, delta: float, context: FloatArray, propensity: float, age: int
    ) -> None:
        # The observation has been discounted once per update since it was learned.
        state.arrays["reward_sums"][arm] += delta * self.config.gamma**age

    def _slate_rule(
        self, state: PolicyState, available: IndexArray, rng: np.random.Generator, context: FloatArray
    ) -> SlotRule:
        counts = state.arrays["counts"][available]
        total = max(float(state.arrays["counts"].sum()), 1.0)
        played = counts > 0
        bonus = self.config.c * np.sqrt(math.log(total) / np.where(played, counts, 1.0))
        scores = np.where(played, self._means(state, available, unplayed=0.0) + bonus, np.inf)

        def slot(remaining: IndexArray) -> tuple[FloatArray, FloatArray]:
            return scores[remaining], uniform_over_maxima(scores[remaining])

        return slot

    def _check_values(self, state: PolicyState) -> None:
        check_discounted_counts(self.name, state, self.config.gamma)
