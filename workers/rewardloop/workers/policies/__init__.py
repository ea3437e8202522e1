"""Bandit policies: which items to show, with the probability each was shown with.

Configs (``EpsilonGreedy``, ``UCB1``, ``Thompson``) are frozen, validated hyper-parameters;
``make_policy`` pairs one with its implementation; learned state is a ``PolicyState`` the
caller keeps and stores as bytes (``dump_state`` / ``load_state``).

>>> import numpy as np
>>> policy = make_policy(config_from_dict("epsilon_greedy", {"epsilon": 0.1}), n_arms=5)
>>> state = policy.new_state()
>>> policy.update(state, arm=3, reward=1.0)
>>> slate = policy.select(state, available=np.array([0, 3, 4]), n=2, rng=np.random.default_rng(1))
>>> [choice.slot for choice in slate], len({choice.arm for choice in slate})
([0, 1], 2)
>>> policy.load_state(policy.dump_state(state)) == state
True
"""

from rewardloop.workers.policies.base import Choice, ConfigError, Policy, PolicyConfig, PolicyState
from rewardloop.workers.policies.epsilon_greedy import EpsilonGreedy
from rewardloop.workers.policies.registry import ALGORITHMS, config_from_dict, make_policy
from rewardloop.workers.policies.thompson import Thompson
from rewardloop.workers.policies.ucb import UCB1

__all__ = [
    "ALGORITHMS",
    "UCB1",
    "Choice",
    "ConfigError",
    "EpsilonGreedy",
    "Policy",
    "PolicyConfig",
    "PolicyState",
    "Thompson",
    "config_from_dict",
    "make_policy",
]
