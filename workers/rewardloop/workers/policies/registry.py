"""Which algorithms exist: name -> config type -> implementation.

A new algorithm is one file (config dataclass + ``Policy`` subclass) and one line in
``_IMPLEMENTATIONS``; the conformance suite then runs every check on it.

>>> config_from_dict("ucb1", {"c": 1.5})
UCB1(c=1.5)
>>> config_from_dict("ucb1", {"c": -1})
Traceback (most recent call last):
...
rewardloop.workers.policies.base.ConfigError: c must be > 0, got -1
>>> make_policy(config_from_dict("thompson"), n_arms=50)
ThompsonPolicy(Thompson(prior_alpha=1.0, prior_beta=1.0, samples=64), n_arms=50)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rewardloop.workers.policies.base import ConfigError, Policy, PolicyConfig
from rewardloop.workers.policies.epsilon_greedy import EpsilonGreedy, EpsilonGreedyPolicy
from rewardloop.workers.policies.thompson import Thompson, ThompsonPolicy
from rewardloop.workers.policies.ucb import UCB1, UCB1Policy

_IMPLEMENTATIONS: dict[type[PolicyConfig], type[Policy[Any]]] = {
    EpsilonGreedy: EpsilonGreedyPolicy,
    UCB1: UCB1Policy,
    Thompson: ThompsonPolicy,
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


def make_policy(config: PolicyConfig, n_arms: int) -> Policy[Any]:
    """The implementation registered for ``config``'s type, over ``n_arms`` arms."""
    implementation = _IMPLEMENTATIONS.get(type(config))
    if implementation is None:
        raise ConfigError(f"no policy registered for config type {type(config).__name__}")
    return implementation(config, n_arms)
