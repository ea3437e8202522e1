"""Thompson sampling with a Beta-Bernoulli posterior per arm.

Each arm's mean reward has the posterior ``Beta(alpha, beta)`` with::

    alpha = prior_alpha + reward_sum
    beta  = prior_beta + count - reward_sum

Fractional rewards in [0, 1] enter as fractional successes (the usual extension of the
Bernoulli likelihood; Agrawal & Goyal 2012 instead binarise them with a coin flip, which
would make ``update`` random and break exact replay).

Per slate, ``samples`` (K) posterior draws are made once for every available arm, a
K x len(available) matrix. For each slot, the probability of an open arm is the fraction of
the K rows whose largest value among the open arms is that arm's; the arm is then drawn with
those probabilities. This is exactly "pick one of the K Thompson samples uniformly and play
its argmax", so the reported propensity is the *exact* probability of the draw that was made
*conditional on the K posterior samples*. It is a multiple of 1/K (so at least 1/K, which
caps inverse-propensity weights at K), and it estimates, with K samples, the marginal
Thompson probability P(arm is the argmax of one posterior draw), which has no closed form.
Use these propensities as the logging policy's probabilities given its samples; do not read
them as that marginal probability.

A choice's score is the arm's posterior mean ``alpha / (alpha + beta)``: deterministic and
readable in logs, unlike the mean of K draws.

>>> import numpy as np
>>> from rewardloop.learning.bandits import Thompson, make_policy
>>> policy = make_policy(Thompson(prior_alpha=1.0, prior_beta=1.0), n_arms=3)
>>> state = policy.new_state()
>>> for reward in [1.0, 1.0, 0.5]:
...     policy.update(state, arm=0, reward=reward)
>>> alpha, beta = policy.posterior(state)
>>> alpha.tolist(), beta.tolist()
([3.5, 1.0, 1.0], [1.5, 1.0, 1.0])
>>> for choice in policy.select(state, available=np.array([0, 2]), n=2, rng=np.random.default_rng(1)):
...     print(choice.arm, choice.score, choice.propensity)   # 45 of the 64 samples favour arm 0
0 0.7 0.703125
2 0.5 1.0
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from rewardloop.learning.bandits.base import Policy, PolicyConfig
from rewardloop.learning.bandits.slates import FloatArray, IndexArray, SlotRule, thompson_slot_rule
from rewardloop.learning.bandits.state import PolicyState
from rewardloop.learning.params import int_in_range, positive


@dataclasses.dataclass(frozen=True, kw_only=True)
class Thompson(PolicyConfig):
    """Hyper-parameters of Beta-Bernoulli Thompson sampling."""

    name: ClassVar[str] = "thompson"

    prior_alpha: float = 1.0
    """Prior pseudo-successes, > 0; with prior_beta = 1, the uniform prior."""
    prior_beta: float = 1.0
    """Prior pseudo-failures, > 0."""
    samples: int = 64
    """Posterior draws per slate (K), in [1, 10000]. Propensities are multiples of 1/K, so 64
    keeps them >= 1/64. The K x arms Beta draws dominate select(): 0.15 ms (cold) to 0.33 ms
    (trained) at 100 arms on a 2-core dev box; K = 32 halves that. The cap bounds the draw."""

    def __post_init__(self) -> None:
        self._set("prior_alpha", positive)
        self._set("prior_beta", positive)
        self._set("samples", lambda name, value: int_in_range(name, value, 1, 10_000))


class ThompsonPolicy(Policy[Thompson]):
    supports_prior = True
    per_arm_strength = True

    def posterior(self, state: PolicyState, arms: IndexArray | None = None) -> tuple[FloatArray, FloatArray]:
        """Beta posterior parameters (alpha, beta) of ``arms`` (default: every arm)."""
        counts, sums = state.arrays["counts"], state.arrays["reward_sums"]
        if arms is not None:
            counts, sums = counts[arms], sums[arms]
        return self.config.prior_alpha + sums, self.config.prior_beta + (counts - sums)

    def _combine(self, state: PolicyState, prior: PolicyState, strength: float | FloatArray) -> PolicyState:
        """Where ``prior`` has data on an arm, it *replaces* the uninformed Beta(prior_alpha, prior_beta).

        The arm's posterior becomes ``Beta(s m + x, s (1 - m) + n - x)`` for strength ``s``, the
        prior's mean ``m`` (its own posterior mean, so never 0 or 1) and the user's ``x`` rewards in
        ``n`` plays: a new user draws around the population's estimate with the spread of ``s``
        observations. Stacking the prior on Beta(1, 1) instead would pull every arm toward 1/2:
        at a 10% click rate a new user's prior mean would be 0.30 at ``s = 2``, and every arm
        would look three times better than it is. The combined arrays hold ``s m - prior_alpha``
        and ``s - prior_alpha - prior_beta`` more than the user's, so that ``posterior`` (which
        adds the base back) yields exactly that; they are for ``select`` only, as ever.
        """
        combined = state.copy()
        prior_counts, prior_sums = prior.arrays["counts"], prior.arrays["reward_sums"]
        known = np.flatnonzero(prior_counts > 0)
        base_alpha, base_beta = self.config.prior_alpha, self.config.prior_beta
        means = (prior_sums[known] + base_alpha) / (prior_counts[known] + base_alpha + base_beta)
        weight = strength[known] if isinstance(strength, np.ndarray) else strength
        combined.arrays["counts"][known] += weight - base_alpha - base_beta
        combined.arrays["reward_sums"][known] += weight * means - base_alpha
        return combined

    def _slate_rule(
        self, state: PolicyState, available: IndexArray, rng: np.random.Generator, context: FloatArray
    ) -> SlotRule:
        alpha, beta = self.posterior(state, available)
        draws = _beta_draws(alpha, beta, self.config.samples, rng)
        return thompson_slot_rule(alpha / (alpha + beta), draws)


def _beta_draws(alpha: FloatArray, beta: FloatArray, k: int, rng: np.random.Generator) -> FloatArray:
    """``k`` draws from Beta(alpha[i], beta[i]) per column i."""
    m = len(alpha)
    if min(alpha.min(), beta.min()) < 1.0:
        return rng.beta(alpha, beta, size=(k, m))
    # Beta(a, b) = X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b), exact. numpy's beta switches to
    # Johnk's rejection sampler when both shapes are <= 1, i.e. for every unplayed arm under
    # the uniform prior: 570 us vs 110 us here for 64 x 100 draws (cold start is common).
    gammas = rng.standard_gamma(np.concatenate((alpha, beta)), size=(k, 2 * m))
    return gammas[:, :m] / (gammas[:, :m] + gammas[:, m:])
