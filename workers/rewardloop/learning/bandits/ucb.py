"""UCB1: play the arm with the highest upper confidence bound on its mean reward.

For an arm played ``n_i`` times with empirical mean ``mean_i``, after ``N`` updates in total
(over all arms, at least 1), the textbook bonus (``tuned=False``) is::

    score_i = mean_i + c * sqrt(ln(N) / n_i)

It assumes the widest spread a reward in [0, 1] can have. Clicks at a 10% rate spread far less
(variance 0.09, not 0.25), and that bonus then dwarfs the gaps between arms: a per-user UCB1
explores nearly round-robin and, on our population families, beats uniform random by only
1.2-1.8x (``bench/families.py``). The default, ``tuned=True``, is UCB1-Tuned (Auer,
Cesa-Bianchi & Fischer 2002, section 4), with the bonus scaled to each arm's spread::

    score_i = mean_i + c * sqrt(ln(N) / n_i * min(1/4, V_i)),   V_i = v_i + sqrt(2 ln(N) / n_i)

where ``v_i = mean_i (1 - mean_i)``, the variance of a reward in [0, 1] with that mean at most (exact
for clicks; the state keeps no sums of squares). ``N`` counts the user's own updates
(``n_updates``), not the pseudo-observations of a prior (``combine``), which count in ``n_i``: a new
user with a population prior is served the prior's best arms, and explores as their own evidence
grows.

Arms never played score ``+inf`` (reported as ``float("inf")``) and so are tried first. Each
slot takes the open arm with the highest score; ties between maxima (always the case among
unplayed arms) are broken uniformly with the rng, so the propensity is ``1 / ties`` and
otherwise 1: UCB1 is deterministic given the state.

``c = sqrt(2)`` with ``tuned=False`` is UCB1 as analysed by Auer, Cesa-Bianchi & Fischer (2002),
"Finite-time analysis of the multiarmed bandit problem", whose logarithmic regret bound holds
for rewards in [0, 1], the range ``update`` accepts; the default ``c = 1`` with ``tuned=True`` is
that paper's UCB1-Tuned. Smaller ``c`` explores less.

>>> import numpy as np
>>> from rewardloop.learning.bandits import UCB1, make_policy
>>> policy = make_policy(UCB1(c=1.0, tuned=False), n_arms=4)
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
from rewardloop.learning.params import boolean, positive


@dataclasses.dataclass(frozen=True, kw_only=True)
class UCB1(PolicyConfig):
    """Hyper-parameters of UCB1."""

    name: ClassVar[str] = "ucb1"
    selection_only: ClassVar[frozenset[str]] = frozenset({"c", "tuned"})

    c: float = 1.0
    """Width of the confidence bonus, > 0: 1 is UCB1-Tuned as published; with ``tuned=False``,
    sqrt(2) is the textbook UCB1."""
    tuned: bool = True
    """Scale the bonus to each arm's spread (UCB1-Tuned) and count only the user's own updates in ``N``."""

    def __post_init__(self) -> None:
        self._set("c", positive)
        self._set("tuned", boolean)


class UCB1Policy(Policy[UCB1]):
    supports_prior = True
    per_arm_strength = True

    def _slate_rule(
        self, state: PolicyState, available: IndexArray, rng: np.random.Generator, context: FloatArray
    ) -> SlotRule:
        counts = state.arrays["counts"][available]
        means = self._means(state, available, unplayed=0.0)
        played = np.maximum(counts, 1.0)
        if self.config.tuned:
            log_total = math.log1p(state.n_updates)
            spread = np.minimum(0.25, means * (1.0 - means) + np.sqrt(2.0 * log_total / played))
            bonus = self.config.c * np.sqrt(log_total / played * spread)
        else:
            bonus = self.config.c * np.sqrt(math.log(max(float(state.arrays["counts"].sum()), 1.0)) / played)
        scores = np.where(counts > 0, means + bonus, np.inf)

        def slot(remaining: IndexArray) -> tuple[FloatArray, FloatArray]:
            return scores[remaining], uniform_over_maxima(scores[remaining])

        return slot
