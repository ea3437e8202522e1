"""Thompson sampling with a Gaussian posterior on each arm's mean reward (known noise variance).

For rewards that are not 0/1 outcomes (a dwell fraction, a normalised rating), model each
reward of arm i as ``N(mu_i, noise_variance)`` with the conjugate prior
``mu_i ~ N(prior_mean, 1 / prior_precision)``. After ``n_i`` rewards summing to ``s_i`` the
posterior is normal with::

    precision_i = prior_precision + n_i / noise_variance
    mean_i      = (prior_precision * prior_mean + s_i / noise_variance) / precision_i

(e.g. Russo et al. 2018, "A tutorial on Thompson sampling", §4; Agrawal & Goyal 2013, "Further
optimal regret bounds for Thompson sampling", use this posterior with noise_variance 1 for any
rewards in [0, 1]). The noise variance is taken as known rather than learned (Normal-Gamma):
rewards are bounded by [0, 1], so 0.25, the largest variance such a reward can have, is a safe
default, and counts and reward sums stay the only statistics, additive as for the Beta version
(``merge``/``combine`` are those of the base class).

Per slate, ``samples`` (K) posterior draws are made once for every available arm and each
slot plays the argmax of one of them, picked uniformly: the propensity is exact given the draws
and a multiple of 1/K, as explained in thompson.py. A choice's score is the posterior mean.

>>> import numpy as np
>>> from rewardloop.learning.bandits import GaussianThompson, make_policy
>>> policy = make_policy(GaussianThompson(prior_mean=0.5, prior_precision=4.0, noise_variance=0.25), n_arms=2)
>>> state = policy.new_state()
>>> for reward in [0.9, 0.7]:
...     policy.update(state, arm=0, reward=reward)
>>> mean, sd = policy.posterior(state)
>>> mean.round(4).tolist(), sd.round(4).tolist()  # (4 * 0.5 + 1.6 / 0.25) / (4 + 2 / 0.25)
([0.7, 0.5], [0.2887, 0.5])
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from rewardloop.learning.bandits.base import Policy, PolicyConfig
from rewardloop.learning.bandits.slates import FloatArray, IndexArray, SlotRule, thompson_slot_rule
from rewardloop.learning.bandits.state import PolicyState
from rewardloop.learning.params import int_in_range, positive, unit_interval


@dataclasses.dataclass(frozen=True, kw_only=True)
class GaussianThompson(PolicyConfig):
    """Hyper-parameters of Gaussian Thompson sampling."""

    name: ClassVar[str] = "gaussian_thompson"

    prior_mean: float = 0.5
    """Prior mean of every arm's mean reward, in [0, 1]; 0.5 is the middle of the reward range."""
    prior_precision: float = 1.0
    """Prior precision (1 / variance) of the mean, > 0; 1.0 is a prior sd of 1, wide on [0, 1]."""
    noise_variance: float = 0.25
    """Variance of one reward around its arm's mean, > 0; 0.25 is the largest a reward in [0, 1]
    can have. Smaller values trust each reward more and explore less."""
    samples: int = 64
    """Posterior draws per slate (K), in [1, 10000]; propensities are multiples of 1/K."""

    def __post_init__(self) -> None:
        self._set("prior_mean", unit_interval)
        self._set("prior_precision", positive)
        self._set("noise_variance", positive)
        self._set("samples", lambda name, value: int_in_range(name, value, 1, 10_000))


class GaussianThompsonPolicy(Policy[GaussianThompson]):
    supports_prior = True
    per_arm_strength = True

    def posterior(self, state: PolicyState, arms: IndexArray | None = None) -> tuple[FloatArray, FloatArray]:
        """Posterior mean and standard deviation of the mean reward of ``arms`` (default: all)."""
        counts, sums = state.arrays["counts"], state.arrays["reward_sums"]
        if arms is not None:
            counts, sums = counts[arms], sums[arms]
        config = self.config
        precision = config.prior_precision + counts / config.noise_variance
        mean = (config.prior_precision * config.prior_mean + sums / config.noise_variance) / precision
        return mean, 1.0 / np.sqrt(precision)

    def _slate_rule(
        self, state: PolicyState, available: IndexArray, rng: np.random.Generator, context: FloatArray
    ) -> SlotRule:
        mean, sd = self.posterior(state, available)
        draws = mean + sd * rng.standard_normal((self.config.samples, len(available)))
        return thompson_slot_rule(mean, draws)
