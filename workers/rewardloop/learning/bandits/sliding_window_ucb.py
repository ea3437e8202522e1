"""Sliding-window UCB (SW-UCB): UCB over the last ``window`` observations only, for drift.

Garivier & Moulines (2011), "On upper-confidence bound policies for switching bandit
problems", ALT (arXiv:0805.3415). With ``N_i`` the number of the last ``window`` updates that
played arm i, ``mean_i`` their mean reward and ``t`` the number of updates so far::

    score_i = mean_i + c * sqrt(ln(min(t, window)) / N_i)

Arms absent from the window score ``+inf`` and are tried first; ties are split uniformly
(propensity ``1 / ties``), as in UCB1. Unlike discounting, an observation counts fully until
it leaves the window and then not at all.

The window is a ring buffer in the state arrays, so serialization stays generic:
``window_arms`` (int64) and ``window_rewards`` (float64) hold update ``k`` at position
``k % window`` (so the next position is ``n_updates % window`` and the first
``min(n_updates, window)`` entries are filled). ``counts`` and ``reward_sums`` are the window's
per-arm totals, recomputed from the buffer on every update (exact, never drifting through
add-then-subtract rounding) so that selection does not scan the buffer. A window slides by
updates, not seconds, so replay is exact; ``supports_prior`` is False (a population's last
``window`` events are no prior).

>>> import numpy as np
>>> from rewardloop.learning.bandits import SlidingWindowUCB, make_policy
>>> policy = make_policy(SlidingWindowUCB(window=3, c=1.0), n_arms=3)
>>> state = policy.new_state()
>>> for arm, reward in [(2, 1.0), (0, 1.0), (1, 0.0), (1, 1.0)]:
...     policy.update(state, arm, reward)
>>> state.arrays["counts"].tolist(), state.arrays["window_arms"].tolist()  # the first (2, 1.0) slid out
([1.0, 2.0, 0.0], [1, 0, 1])
>>> for choice in policy.select(state, available=np.arange(3), n=3, rng=np.random.default_rng(0)):
...     print(choice.arm, round(choice.score, 4))  # min(t, window) = 3
2 inf
0 2.0481
1 1.2412
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np

from rewardloop.learning.bandits.base import Policy, PolicyConfig
from rewardloop.learning.bandits.slates import FloatArray, IndexArray, SlotRule, uniform_over_maxima
from rewardloop.learning.bandits.state import PolicyState
from rewardloop.learning.params import int_in_range, positive


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlidingWindowUCB(PolicyConfig):
    """Hyper-parameters of sliding-window UCB."""

    name: ClassVar[str] = "sliding_window_ucb"

    window: int = 200
    """Number of most recent updates that count, in [1, 100000]; the state stores them (16
    bytes each). The more arms, the longer it must be for each to keep a few observations: on
    10 stationary arms 200 regrets 0.35 of uniform, 100 regrets 0.55."""
    c: float = 0.5
    """Width of the confidence bonus, > 0. Garivier & Moulines analyse sqrt(xi), xi > 1/2;
    in the drift test 0.5 puts the new best arm in 0.89 of the last 500 steps, 1.0 in 0.72."""

    def __post_init__(self) -> None:
        self._set("window", lambda name, value: int_in_range(name, value, 1, 100_000))
        self._set("c", positive)


class SlidingWindowUCBPolicy(Policy[SlidingWindowUCB]):
    # Not per arm: kept whole at rest.
    whole_arrays = frozenset({"window_arms", "window_rewards"})

    def new_state(self) -> PolicyState:
        window = self.config.window
        return PolicyState(
            {
                "counts": np.zeros(self.n_arms),
                "reward_sums": np.zeros(self.n_arms),
                "window_arms": np.zeros(window, dtype=np.int64),
                "window_rewards": np.zeros(window),
            }
        )

    def _update(
        self,
        state: PolicyState,
        arm: int,
        reward: float,
        context: FloatArray,
        propensity: float,
    ) -> None:
        position = state.n_updates % self.config.window
        state.arrays["window_arms"][position] = arm
        state.arrays["window_rewards"][position] = reward
        counts, sums = self._window_totals(state, filled=min(state.n_updates + 1, self.config.window))
        state.arrays["counts"][:] = counts
        state.arrays["reward_sums"][:] = sums

    def _window_totals(self, state: PolicyState, filled: int) -> tuple[FloatArray, FloatArray]:
        arms = state.arrays["window_arms"][:filled]
        counts = np.bincount(arms, minlength=self.n_arms).astype(np.float64)
        sums = np.bincount(arms, weights=state.arrays["window_rewards"][:filled], minlength=self.n_arms)
        return counts, sums.astype(np.float64, copy=False)

    def _revise(
        self, state: PolicyState, arm: int, delta: float, context: FloatArray, propensity: float, age: int
    ) -> None:
        if age >= self.config.window:
            return  # the observation has left the window: nothing remembers it
        position = (state.n_updates - 1 - age) % self.config.window
        if state.arrays["window_arms"][position] != arm:
            raise ValueError(f"the observation {age} updates ago was not of arm {arm}")
        rewards = state.arrays["window_rewards"]
        rewards[position] = min(max(rewards[position] + delta, 0.0), 1.0)
        counts, sums = self._window_totals(state, filled=min(state.n_updates, self.config.window))
        state.arrays["counts"][:] = counts
        state.arrays["reward_sums"][:] = sums

    def _slate_rule(
        self, state: PolicyState, available: IndexArray, rng: np.random.Generator, context: FloatArray
    ) -> SlotRule:
        counts = state.arrays["counts"][available]
        steps = max(min(state.n_updates, self.config.window), 1)
        played = counts > 0
        bonus = self.config.c * np.sqrt(math.log(steps) / np.where(played, counts, 1.0))
        scores = np.where(played, self._means(state, available, unplayed=0.0) + bonus, np.inf)

        def slot(remaining: IndexArray) -> tuple[FloatArray, FloatArray]:
            return scores[remaining], uniform_over_maxima(scores[remaining])

        return slot

    def _check_values(self, state: PolicyState) -> None:
        arms, rewards = state.arrays["window_arms"], state.arrays["window_rewards"]
        filled = min(state.n_updates, self.config.window)
        if np.any(arms < 0) or np.any(arms >= self.n_arms) or np.any(arms[filled:] != 0):
            raise ValueError(f"corrupt {self.name} policy state: window arms must be in [0, {self.n_arms})")
        if not np.all((rewards >= 0) & (rewards <= 1)) or rewards[filled:].any():  # NaN fails both
            raise ValueError(f"corrupt {self.name} policy state: window rewards must be in [0, 1]")
        counts, sums = self._window_totals(state, filled)
        stored = state.arrays["counts"], state.arrays["reward_sums"]
        if not (np.array_equal(counts, stored[0]) and np.array_equal(sums, stored[1])):
            raise ValueError(
                f"corrupt {self.name} policy state: counts and reward sums do not match the window",
            )
