"""Exploration for agent policies: ε-greedy with a linear schedule and Boltzmann, with exact propensities.

Each rule turns one state's Q-values into a distribution over actions; :func:`choose` draws from it
and returns the action with its probability (the propensity a decision records, which off-policy
evaluation needs exactly). Greedy ties share the greedy mass, so the propensity is the probability
the policy really had.

>>> eps = EpsilonGreedy(start=1.0, end=0.1, decay_steps=100)
>>> eps.epsilon(0), eps.epsilon(50), eps.epsilon(1000)
(1.0, 0.55, 0.1)
>>> q = np.array([0.1, 0.9, 0.9, 0.2])
>>> eps.probabilities(q, step=1000).round(3).tolist()
[0.025, 0.475, 0.475, 0.025]
>>> Boltzmann(temperature=0.5).probabilities(q, step=0).round(3).tolist()
[0.082, 0.408, 0.408, 0.101]
>>> choose(np.array([0.0, 1.0, 0.0]), np.random.default_rng(0))
(1, 1.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rewardloop.learning.params import ConfigError, int_in_range, positive, reject_unknown, unit_interval

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class EpsilonGreedy:
    """Greedy with probability ``1 - ε``, uniform otherwise; ε falls linearly from ``start`` to
    ``end`` over ``decay_steps`` decisions (CleanRL's ``linear_schedule``) and stays at ``end``."""

    start: float = 1.0
    end: float = 0.05
    decay_steps: int = 4_000

    def __post_init__(self) -> None:
        unit_interval("exploration.start", self.start)
        unit_interval("exploration.end", self.end)
        int_in_range("exploration.decay_steps", self.decay_steps, 0, 10**12)
        if self.end > self.start:
            raise ConfigError(f"exploration.end must be <= exploration.start, got {self.end} > {self.start}")

    def epsilon(self, step: int) -> float:
        if step >= self.decay_steps:
            return float(self.end)
        return float(self.start + (self.end - self.start) * step / self.decay_steps)

    def probabilities(self, q: FloatArray, step: int) -> FloatArray:
        eps = self.epsilon(step)
        greedy = q == q.max()
        return np.asarray((1.0 - eps) * greedy / greedy.sum() + eps / q.size, dtype=np.float64)


@dataclass(frozen=True)
class Boltzmann:
    """Actions drawn in proportion to ``exp(Q / temperature)`` (softmax exploration)."""

    temperature: float = 0.1

    def __post_init__(self) -> None:
        positive("exploration.temperature", self.temperature)

    def probabilities(self, q: FloatArray, step: int) -> FloatArray:
        z = (q - q.max()) / self.temperature
        w = np.exp(z)
        return np.asarray(w / w.sum(), dtype=np.float64)


Exploration = EpsilonGreedy | Boltzmann
RULES: dict[str, type[EpsilonGreedy] | type[Boltzmann]] = {"epsilon_greedy": EpsilonGreedy, "boltzmann": Boltzmann}


def choose(probabilities: FloatArray, rng: np.random.Generator) -> tuple[int, float]:
    """One action drawn from ``probabilities``, and its probability."""
    u = rng.random() * probabilities.sum()
    action = min(int(np.searchsorted(np.cumsum(probabilities), u, side="right")), probabilities.size - 1)
    while probabilities[action] == 0.0:  # float round-off at a boundary: step back to a real option
        action -= 1
    return action, float(probabilities[action])


def exploration_to_dict(rule: Exploration) -> dict[str, Any]:
    name = next(key for key, kind in RULES.items() if isinstance(rule, kind))
    return {"rule": name, **asdict(rule)}


def exploration_from_dict(spec: dict[str, Any]) -> Exploration:
    """The rule a dict names (``{"rule": "boltzmann", "temperature": 0.2}``); errors name the field."""
    spec = dict(spec)
    name = spec.pop("rule", "epsilon_greedy")
    kind = RULES.get(name)
    if kind is None:
        raise ConfigError(f"exploration.rule must be one of {', '.join(RULES)}, got {name!r}")
    reject_unknown("exploration", spec, set(kind.__dataclass_fields__))
    return kind(**spec)
