"""Bandit policies: which items to show, with the probability each was shown with.

Configs are frozen, validated hyper-parameters, one per algorithm:

- context-free, stationary: ``EpsilonGreedy``, ``UCB1``, ``Thompson`` (Beta), ``GaussianThompson``,
  ``Softmax``; adversarial: ``EXP3`` (needs the propensity on update);
- contextual (need ``context_dim`` and a context on update and select): ``LinUCB``, ``LinTS``,
  ``HybridLinUCB`` (also needs ``arm_features``);
- for drifting rewards: ``DiscountedUCB``, ``SlidingWindowUCB``, ``DiscountedThompson``,
  ``DiscountedLinUCB``.

``make_policy`` pairs one with its implementation; learned state is a ``PolicyState`` the
caller keeps and stores as bytes (``dump_state`` / ``load_state``). Algorithms whose state is
additive (``Policy.supports_prior``) also ``merge`` states (per-shard population statistics)
and ``combine`` a user's state with a population or segment prior before selecting.

>>> import numpy as np
>>> policy = make_policy(config_from_dict("epsilon_greedy", {"epsilon": 0.1}), n_arms=5)
>>> state = policy.new_state()
>>> policy.update(state, arm=3, reward=1.0)
>>> slate = policy.select(state, available=np.array([0, 3, 4]), n=2, rng=np.random.default_rng(1))
>>> [choice.slot for choice in slate], len({choice.arm for choice in slate})
([0, 1], 2)
>>> policy.load_state(policy.dump_state(state)) == state
True
>>> population = policy.merge([state, state])  # e.g. two shards' statistics
>>> effective = policy.combine(policy.new_state(), population, strength=5.0)
>>> effective.arrays["counts"].tolist(), effective.arrays["reward_sums"].tolist()
([0.0, 0.0, 0.0, 5.0, 0.0], [0.0, 0.0, 0.0, 5.0, 0.0])
"""

from rewardloop.learning.bandits.base import Policy, PolicyConfig
from rewardloop.learning.bandits.discounted_linucb import DiscountedLinUCB
from rewardloop.learning.bandits.discounted_thompson import DiscountedThompson
from rewardloop.learning.bandits.discounted_ucb import DiscountedUCB
from rewardloop.learning.bandits.epsilon_greedy import EpsilonGreedy
from rewardloop.learning.bandits.exp3 import EXP3
from rewardloop.learning.bandits.gaussian_thompson import GaussianThompson
from rewardloop.learning.bandits.hybrid_linucb import HybridLinUCB
from rewardloop.learning.bandits.lin_ts import LinTS
from rewardloop.learning.bandits.linucb import LinUCB
from rewardloop.learning.bandits.registry import ALGORITHMS, config_from_dict, make_policy, policy_class
from rewardloop.learning.bandits.slates import Choice
from rewardloop.learning.bandits.sliding_window_ucb import SlidingWindowUCB
from rewardloop.learning.bandits.softmax import Softmax
from rewardloop.learning.bandits.state import PolicyState
from rewardloop.learning.bandits.thompson import Thompson
from rewardloop.learning.bandits.ucb import UCB1
from rewardloop.learning.params import ConfigError

__all__ = [
    "ALGORITHMS",
    "EXP3",
    "UCB1",
    "Choice",
    "ConfigError",
    "DiscountedLinUCB",
    "DiscountedThompson",
    "DiscountedUCB",
    "EpsilonGreedy",
    "GaussianThompson",
    "HybridLinUCB",
    "LinTS",
    "LinUCB",
    "Policy",
    "PolicyConfig",
    "PolicyState",
    "SlidingWindowUCB",
    "Softmax",
    "Thompson",
    "config_from_dict",
    "make_policy",
    "policy_class",
]
