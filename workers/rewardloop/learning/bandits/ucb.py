"""UCB1: play the arm with the highest upper confidence bound on its mean reward.

For an arm played ``n_i`` times with empirical mean ``mean_i``, after ``N`` updates in total
(over all arms, at least 1)::

    score_i = mean_i + c * sqrt(ln(N) / n_i)

Arms never played score ``+inf`` (reported as ``float("inf")``) and so are tried first. Each
slot takes the open arm with the highest score; ties between maxima (always the case among
unplayed arms) are broken uniformly with the rng, so the propensity is ``1 / ties`` and
otherwise 1: UCB1 is deterministic given the state.

The default ``c = sqrt(2)`` is UCB1 as analysed by Auer, Cesa-Bianchi & Fischer (2002),
"Finite-time analysis of the multiarmed bandit problem", whose logarithmic regret bound holds
for rewards in [0, 1], the range ``update`` accepts. Smaller ``c`` explores less.

>>> import numpy as np
>>> from rewardloop.learning.bandits import UCB1, make_policy
>>> policy = make_policy(UCB1(c=1.0), n_arms=4)
>>> state = policy.new_state()
>>> for arm, reward in [(0, 1.0), (1, 0.0), (2, 0.5)]:
...     policy.update(state, arm, reward)
>>> for choice in policy.select(state, available=np.arange(4), n=3, rng=np.random.default_rng(0)):
...     print(choice.arm, round(choice.score, 4), choice.propensity)
3 inf 1.0
0 2.0481 1.0
2 1.5481 1.0
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np

from rewardloop.learning.bandits.base import Policy, PolicyConfig
from rewardloop.learning.bandits.slates import FloatArray, IndexArray, SlotRule, uniform_over_maxima
from rewardloop.learning.bandits.state import PolicyState
from rewardloop.learning.params import positive


@dataclasses.dataclass(frozen=True, kw_only=True)
class UCB1(PolicyConfig):
    """Hyper-parameters of UCB1."""

    name: ClassVar[str] = "ucb1"

    c: float = math.sqrt(2.0)
    """Width of the confidence bonus, > 0; sqrt(2) is the textbook UCB1."""

    def __post_init__(self) -> None:
        self._set("c", positive)


class UCB1Policy(Policy[UCB1]):
    supports_prior = True

    def _slate_rule(
        self, state: PolicyState, available: IndexArray, rng: np.random.Generator, context: FloatArray
    ) -> SlotRule:
        counts = state.arrays["counts"][available]
        total = max(float(state.arrays["counts"].sum()), 1.0)
        bonus = self.config.c * np.sqrt(math.log(total) / np.maximum(counts, 1.0))
        scores = np.where(counts > 0, self._means(state, available, unplayed=0.0) + bonus, np.inf)

        def slot(remaining: IndexArray) -> tuple[FloatArray, FloatArray]:
            return scores[remaining], uniform_over_maxima(scores[remaining])

        return slot
