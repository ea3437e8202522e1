"""Epsilon-greedy: exploit the best empirical mean, explore uniformly with probability epsilon.

For the arms still open in a slot (m of them), with the greedy set being those with the
highest empirical mean (ties split evenly)::

    P(arm) = epsilon / m + (1 - epsilon) * [arm is greedy] / |greedy set|

An arm never played counts as having mean ``initial_mean``. The default 1.0, the top of the
reward range, is optimistic (Sutton & Barto, *Reinforcement Learning*, 2nd ed., §2.6): every
arm is played greedily before any arm is exploited, instead of the first arm to win a reward
locking in and the rest being left to epsilon. Set 0.0 to trust played arms first.

A choice's score is the arm's empirical mean (``initial_mean`` when unplayed).

>>> import numpy as np
>>> from rewardloop.learning.bandits import EpsilonGreedy, make_policy
>>> policy = make_policy(EpsilonGreedy(epsilon=0.2, initial_mean=0.0), n_arms=4)
>>> state = policy.new_state()
>>> for arm, reward in [(0, 0.2), (1, 0.9), (2, 0.9), (3, 0.1)]:
...     policy.update(state, arm, reward)
>>> first = policy.select(state, available=np.arange(4), n=2, rng=np.random.default_rng(0))[0]
>>> first.arm, first.score, round(first.propensity, 6)   # 0.2 / 4 + 0.8 / 2
(2, 0.9, 0.45)
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from rewardloop.learning.bandits.base import Policy, PolicyConfig
from rewardloop.learning.bandits.slates import FloatArray, IndexArray, SlotRule, uniform_over_maxima
from rewardloop.learning.bandits.state import PolicyState
from rewardloop.learning.params import unit_interval


@dataclasses.dataclass(frozen=True, kw_only=True)
class EpsilonGreedy(PolicyConfig):
    """Hyper-parameters of epsilon-greedy."""

    name: ClassVar[str] = "epsilon_greedy"

    epsilon: float = 0.1
    """Probability mass spread uniformly over the open arms, in [0, 1]."""
    initial_mean: float = 1.0
    """Mean assumed for arms never played, in [0, 1]; 1.0 is optimistic (see module doc)."""

    def __post_init__(self) -> None:
        self._set("epsilon", unit_interval)
        self._set("initial_mean", unit_interval)


class EpsilonGreedyPolicy(Policy[EpsilonGreedy]):
    supports_prior = True
    per_arm_strength = True

    def _slate_rule(
        self, state: PolicyState, available: IndexArray, rng: np.random.Generator, context: FloatArray
    ) -> SlotRule:
        means = self._means(state, available, unplayed=self.config.initial_mean)
        epsilon = self.config.epsilon

        def slot(remaining: IndexArray) -> tuple[FloatArray, FloatArray]:
            scores = means[remaining]
            return scores, epsilon / len(scores) + (1.0 - epsilon) * uniform_over_maxima(scores)

        return slot
