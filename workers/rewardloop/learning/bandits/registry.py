"""Which algorithms exist: name -> config type -> implementation.

A new algorithm is one file (config dataclass + ``Policy`` subclass) and one line in
``_IMPLEMENTATIONS``; the conformance suite then runs every check on it.

>>> sorted(ALGORITHMS)  # doctest: +NORMALIZE_WHITESPACE
['discounted_linucb', 'discounted_thompson', 'discounted_ucb', 'epsilon_greedy', 'exp3',
 'gaussian_thompson', 'hybrid_linucb', 'lin_ts', 'linucb', 'sliding_window_ucb', 'softmax',
 'thompson', 'ucb1']
>>> config_from_dict("ucb1", {"c": 1.5})
UCB1(c=1.5, tuned=True)
>>> config_from_dict("ucb1", {"c": -1})
Traceback (most recent call last):
...
rewardloop.learning.params.ConfigError: c must be > 0, got -1
>>> make_policy(config_from_dict("thompson"), n_arms=50)
ThompsonPolicy(Thompson(prior_alpha=1.0, prior_beta=1.0, samples=64), n_arms=50)
>>> make_policy(config_from_dict("linucb"), n_arms=50, context_dim=12)
LinUCBPolicy(LinUCB(ridge=1.0, alpha=1.0), n_arms=50, context_dim=12)
>>> make_policy(config_from_dict("linucb"), n_arms=50)
Traceback (most recent call last):
...
ValueError: linucb is contextual: context_dim must be >= 1, got 0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy.typing as npt

from rewardloop.learning.bandits.base import Policy, PolicyConfig
from rewardloop.learning.bandits.discounted_linucb import DiscountedLinUCB, DiscountedLinUCBPolicy
from rewardloop.learning.bandits.discounted_thompson import DiscountedThompson, DiscountedThompsonPolicy
from rewardloop.learning.bandits.discounted_ucb import DiscountedUCB, DiscountedUCBPolicy
from rewardloop.learning.bandits.epsilon_greedy import EpsilonGreedy, EpsilonGreedyPolicy
from rewardloop.learning.bandits.exp3 import EXP3, EXP3Policy
from rewardloop.learning.bandits.gaussian_thompson import GaussianThompson, GaussianThompsonPolicy
from rewardloop.learning.bandits.hybrid_linucb import HybridLinUCB, HybridLinUCBPolicy
from rewardloop.learning.bandits.lin_ts import LinTS, LinTSPolicy
from rewardloop.learning.bandits.linucb import LinUCB, LinUCBPolicy
from rewardloop.learning.bandits.sliding_window_ucb import SlidingWindowUCB, SlidingWindowUCBPolicy
from rewardloop.learning.bandits.softmax import Softmax, SoftmaxPolicy
from rewardloop.learning.bandits.thompson import Thompson, ThompsonPolicy
from rewardloop.learning.bandits.ucb import UCB1, UCB1Policy
from rewardloop.learning.params import ConfigError

_IMPLEMENTATIONS: dict[type[PolicyConfig], type[Policy[Any]]] = {
    EpsilonGreedy: EpsilonGreedyPolicy,
    UCB1: UCB1Policy,
    Thompson: ThompsonPolicy,
    GaussianThompson: GaussianThompsonPolicy,
    Softmax: SoftmaxPolicy,
    EXP3: EXP3Policy,
    LinUCB: LinUCBPolicy,
    HybridLinUCB: HybridLinUCBPolicy,
    LinTS: LinTSPolicy,
    DiscountedUCB: DiscountedUCBPolicy,
    SlidingWindowUCB: SlidingWindowUCBPolicy,
    DiscountedThompson: DiscountedThompsonPolicy,
    DiscountedLinUCB: DiscountedLinUCBPolicy,
}

ALGORITHMS: dict[str, type[PolicyConfig]] = {
    config_type.name: config_type for config_type in sorted(_IMPLEMENTATIONS, key=lambda t: t.name)
}


def config_from_dict(name: str, params: Mapping[str, Any] | None = None) -> PolicyConfig:
    """The validated config of algorithm ``name``; ConfigError names what is wrong."""
    config_type = ALGORITHMS.get(name) if isinstance(name, str) else None
    if config_type is None:
        raise ConfigError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}")
    known = [field.name for field in dataclasses.fields(config_type)]
    for key in params or {}:
        if key not in known:
            raise ConfigError(f"unknown parameter {key!r} for {name}; known: {', '.join(known)}")
    return config_type(**(params or {}))


def policy_class(config: PolicyConfig) -> type[Policy[Any]]:
    """The implementation registered for ``config``'s type: its class flags (``contextual``,
    ``supports_prior``: additive statistics, so priors and weighted updates) tell what it can do.

    >>> policy_class(UCB1()).supports_prior, policy_class(DiscountedUCB()).supports_prior
    (True, False)
    """
    implementation = _IMPLEMENTATIONS.get(type(config))
    if implementation is None:
        raise ConfigError(f"no policy registered for config type {type(config).__name__}")
    return implementation


def make_policy(
    config: PolicyConfig, n_arms: int, context_dim: int = 0, arm_features: npt.ArrayLike | None = None
) -> Policy[Any]:
    """The implementation registered for ``config``'s type, over ``n_arms`` arms.

    ``context_dim`` is the length of the context vector (bias term included) the caller will
    pass; contextual algorithms need it >= 1, the others ignore it. ``arm_features``
    (n_arms x k item features) is needed by hybrid_linucb only. ValueError names what is wrong.
    """
    return policy_class(config)(config, n_arms, context_dim=context_dim, arm_features=arm_features)
