"""Linear Thompson sampling: sample each arm's coefficients from a Gaussian around its ridge fit.

Agrawal & Goyal (2013), "Thompson sampling for contextual bandits with linear payoffs", ICML.
Per arm the posterior of the coefficients is ``N(theta_a, v^2 A_a^-1)`` with ``A_a`` and
``theta_a`` the ridge regression of ridge.py (disjoint arms, as in LinUCB, rather than the
paper's single shared theta). For a context x only ``x . theta`` matters, and under that
posterior it is ``N(x . theta_a, v^2 x^T A_a^-1 x)``, independent across arms; that scalar is
what is sampled, exactly, instead of a d-dimensional theta.

Per slate, ``samples`` (K) draws are made once for every available arm, and each slot plays
the argmax of one of them picked uniformly: the propensity is exact given the draws and a
multiple of 1/K (so at least 1/K), as explained in thompson.py; it estimates the marginal
probability that the arm wins one posterior draw and must not be read as that probability.
A choice's score is the posterior mean ``x . theta_a``.

``v`` scales the posterior: Agrawal & Goyal's ``R sqrt(24 d ln(1 / delta) / epsilon)`` makes
the regret bound hold but explores far too much in practice, even ``v = R = 0.5`` (the largest
noise scale of a reward in [0, 1]) explores more than needed (see the default).

>>> import numpy as np
>>> from rewardloop.learning.bandits import LinTS, make_policy
>>> policy = make_policy(LinTS(v=0.5, samples=8), n_arms=3, context_dim=2)
>>> state = policy.new_state()
>>> x = np.array([1.0, 0.5])
>>> for _ in range(20):
...     policy.update(state, arm=1, reward=1.0, context=x)
>>> slate = policy.select(state, np.arange(3), n=2, rng=np.random.default_rng(0), context=x)
>>> [(choice.arm, round(choice.score, 4), choice.propensity) for choice in slate]  # 20 |x|^2 / (1 + 20 |x|^2)
[(1, 0.9615, 1.0), (2, 0.0, 0.625)]
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from rewardloop.learning.bandits.ridge import RidgeConfig, RidgePolicy
from rewardloop.learning.bandits.slates import FloatArray, IndexArray, SlotRule, thompson_slot_rule
from rewardloop.learning.bandits.state import PolicyState
from rewardloop.learning.params import int_in_range, positive


@dataclasses.dataclass(frozen=True, kw_only=True)
class LinTS(RidgeConfig):
    """Hyper-parameters of linear Thompson sampling (and ``ridge``, from RidgeConfig)."""

    name: ClassVar[str] = "lin_ts"

    v: float = 0.25
    """Posterior scale, > 0: the sampled coefficients have covariance v^2 A_a^-1. In the
    contextual learning tests 0.25 regrets 0.12 of uniform (5 arms) and 0.32 (20 arms), 0.5
    0.16 and 0.44, 1.0 0.30 on 5 arms."""
    samples: int = 64
    """Posterior draws per slate (K), in [1, 10000]; propensities are multiples of 1/K."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("v", positive)
        self._set("samples", lambda name, value: int_in_range(name, value, 1, 10_000))


class LinTSPolicy(RidgePolicy[LinTS]):
    def _slate_rule(
        self, state: PolicyState, available: IndexArray, rng: np.random.Generator, context: FloatArray
    ) -> SlotRule:
        means, variances = self.fit(state, available, context)
        noise = rng.standard_normal((self.config.samples, len(available)))
        return thompson_slot_rule(means, means + self.config.v * np.sqrt(variances) * noise)
