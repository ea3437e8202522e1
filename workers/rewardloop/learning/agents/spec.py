"""What an agent surface declares: its learner, its sessions and how it is served (a config that checks itself).

An agent surface's state is ``[request context (the surface's features), session features]``
(``session.py``): its length follows from the config, so the learner's ``observation_size`` is
never written by hand.

>>> spec = AgentSpec.from_dict({"params": {"hidden": [32]}, "idle_timeout_seconds": 600}, "surfaces.a.agent")
>>> spec.session.idle_timeout_ms, spec.dqn_config(context_dim=4, n_actions=3).observation_size
(600000, 10)
>>> AgentSpec.from_dict({"replicas": 0}, "surfaces.a.agent")
Traceback (most recent call last):
...
rewardloop.learning.params.ConfigError: surfaces.a.agent.replicas must be in [1, 64], got 0
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from rewardloop.learning.agents.config import DQNConfig, config_from_dict, config_to_dict
from rewardloop.learning.agents.session import FEATURES, SessionConfig
from rewardloop.learning.params import ConfigError, int_in_range, reject_unknown, within

ALGORITHMS = ("dqn",)
"""What serves an agent surface. Tabular Q-learning needs a discrete state, and an agent surface's
session features are continuous: it stays a library learner (``learning/agents/tabular.py``)."""
KEYS = {"params", "idle_timeout_seconds", "max_turns", "replicas", "checkpoint_every", "checkpoint_seconds"}
# The learner's fields an agent surface sets itself (from its features and actions).
DERIVED = {"observation_size", "n_actions"}


@dataclass(frozen=True)
class AgentSpec:
    algorithm: str = "dqn"
    # The learner's hyper-parameters (``DQNConfig`` fields but the derived ones), as JSON text so
    # that the spec stays hashable and comparable.
    params_json: str = "{}"
    session: SessionConfig = field(default_factory=SessionConfig)
    replicas: int = 1
    """Serve replicas of the surface's policy."""
    checkpoint_every: int = 500
    """Transitions between the trainer's checkpoints (each publishes a version)."""
    checkpoint_seconds: float = 10.0
    """A quiet trainer publishes what it learned since its last checkpoint after this long."""

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(
                f"algorithm must be one of {', '.join(ALGORITHMS)} on an agent surface, got {self.algorithm!r}"
            )
        int_in_range("replicas", self.replicas, 1, 64)
        int_in_range("checkpoint_every", self.checkpoint_every, 1, 10**7)
        if not 0.1 <= self.checkpoint_seconds <= 86_400:
            raise ConfigError(f"checkpoint_seconds must be in [0.1, 86400], got {self.checkpoint_seconds}")
        params = self.params
        reject_unknown("params", params, {f.name for f in fields(DQNConfig)} - DERIVED)
        try:
            self.dqn_config(context_dim=1, n_actions=1)  # the learner checks its own values
        except ConfigError as exc:
            raise within("params", exc) from exc

    @property
    def params(self) -> dict[str, Any]:
        return dict(json.loads(self.params_json))

    def observation_size(self, context_dim: int, n_actions: int) -> int:
        return context_dim + len(FEATURES) + n_actions

    def dqn_config(self, context_dim: int, n_actions: int) -> DQNConfig:
        spec = {
            **self.params,
            "observation_size": self.observation_size(context_dim, n_actions),
            "n_actions": n_actions,
        }
        config = config_from_dict(self.algorithm, spec)
        assert isinstance(config, DQNConfig)
        return config

    def learner_dict(self, context_dim: int, n_actions: int) -> dict[str, Any]:
        """The learner's config in ``checkpoint.config_to_dict``'s form (what the trainer and replicas take)."""
        return config_to_dict(self.dqn_config(context_dim, n_actions))

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], where: str, algorithm: str = "dqn") -> AgentSpec:
        """``[surfaces.<name>.agent]``; errors name the field under ``where``."""
        try:
            reject_unknown("", spec, KEYS)
            params = spec.get("params", {})
            if not isinstance(params, Mapping):
                raise ConfigError("params must be a table")
            session = SessionConfig(
                idle_timeout_ms=int(1000 * _number("idle_timeout_seconds", spec.get("idle_timeout_seconds", 1800))),
                max_turns=spec.get("max_turns", 50),
            )
            return cls(
                algorithm=algorithm,
                params_json=json.dumps(dict(params), sort_keys=True),
                session=session,
                replicas=spec.get("replicas", 1),
                checkpoint_every=spec.get("checkpoint_every", 500),
                checkpoint_seconds=_number("checkpoint_seconds", spec.get("checkpoint_seconds", 10.0)),
            )
        except ConfigError as exc:
            raise within(where, exc) from exc
        except TypeError as exc:  # a learner field of the wrong type
            raise ConfigError(f"{where}.params: {exc}") from exc


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    return float(value)
