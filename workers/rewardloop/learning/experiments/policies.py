"""Policy experiments: a variant that decides a surface with another policy (algorithm + hyper-parameters).

A variant's ``SurfacePolicy`` is what the Admin API's EvaluatePolicy takes as a candidate: a
registered bandit algorithm and parameters by name (whole numbers become ints, as
``evaluation.candidate.candidate_params`` reads a proto map). It checks itself with messages that
name the field, relative to the policy (``params.epsilon: must be in [0, 1], got 1.5``).

A variant's users keep a policy state of their own for each surface it overrides, under a key
(``policy_key``) that names the surface, the experiment (by name and creation time: a deleted
experiment's namesake starts afresh) and the variant; the surface's own state stays under the
surface's name, untouched, and serves them again once the experiment stops.

>>> SurfacePolicy("epsilon_greedy", {"epsilon": 1}).config
EpsilonGreedy(epsilon=1.0, initial_mean=1.0)
>>> SurfacePolicy("epsilon_greedy", {"epsilon": 1.5})
Traceback (most recent call last):
...
rewardloop.learning.params.ConfigError: params.epsilon: must be in [0, 1], got 1.5
>>> key = policy_key("home", "new_ranker", "treatment", 1764400000000)
>>> key, is_variant_key(key), is_variant_key("home")
('home@new_ranker/treatment/1764400000000', True, False)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rewardloop.learning.bandits import ALGORITHMS, PolicyConfig, config_from_dict
from rewardloop.learning.params import NAME_PATTERN, ConfigError

# Surface and experiment names are [A-Za-z0-9_.-]: neither can hold it, so no key is a surface's name.
SEPARATOR = "@"
MAX_PARAMS = 20


def policy_key(surface: str, experiment: str, variant: str, created_ms: int) -> str:
    """The key of a variant's policy state for ``surface`` (``UserState.policies``, the ledger, snapshots)."""
    return f"{surface}{SEPARATOR}{experiment}/{variant}/{created_ms}"


def is_variant_key(name: str) -> bool:
    """Whether a policy-state key is a variant's (not a surface's own state)."""
    return SEPARATOR in name


@dataclass(frozen=True)
class SurfacePolicy:
    """A registered bandit ``algorithm`` and its hyper-parameters (empty: the algorithm's defaults)."""

    algorithm: str
    params: Mapping[str, float | int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.algorithm, str) or self.algorithm not in ALGORITHMS:
            raise ConfigError(f"algorithm: unknown algorithm {self.algorithm!r}; known: {', '.join(ALGORITHMS)}")
        if not isinstance(self.params, Mapping) or len(self.params) > MAX_PARAMS:
            raise ConfigError(f"params must map at most {MAX_PARAMS} parameter names to numbers")
        defaults = {f.name: f.default for f in dataclasses.fields(ALGORITHMS[self.algorithm])}
        known = list(defaults)
        params: dict[str, float | int] = {}
        for name, value in sorted(self.params.items()):
            if name not in defaults:
                # A caller's name in the field path only when it is one: else the message quotes its start.
                where = f"params.{name}" if isinstance(name, str) and NAME_PATTERN.match(name) else "params"
                shown = f" {str(name)[:40]!r}" if where == "params" else ""
                raise ConfigError(f"{where}: unknown parameter{shown} for {self.algorithm}; known: {', '.join(known)}")
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"params.{name}: must be a finite number, got {value!r}")
            if isinstance(defaults[name], bool) and value in (0, 1):
                params[name] = bool(value)  # a switch (ucb1's tuned): 0 or 1 in a proto map of doubles
            elif isinstance(value, bool):
                raise ConfigError(f"params.{name}: must be a number, got {value!r}")
            else:
                # As EvaluatePolicy reads a proto map: whole numbers count (window sizes, sample counts).
                params[name] = int(value) if float(value).is_integer() else float(value)
        object.__setattr__(self, "params", params)
        try:
            self.config  # noqa: B018 (validated now; cached for the shard)
        except (ConfigError, TypeError, ValueError) as exc:
            raise ConfigError(_named(str(exc), known)) from None

    @functools.cached_property
    def config(self) -> PolicyConfig:
        """The validated config (checked by ``__post_init__``)."""
        return config_from_dict(self.algorithm, self.params)

    def to_dict(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "params": dict(self.params)}


def _named(message: str, known: list[str]) -> str:
    """A config's message (``epsilon must be in [0, 1], got 1.5``) as ``params.epsilon: must be ...``."""
    head, _, rest = message.partition(" ")
    if head in known and rest:
        return f"params.{head}: {rest}"
    return f"params: {message}"


def surface_policy(raw: Any) -> SurfacePolicy:
    """The stored / requested form ``{"algorithm": ..., "params": {...}}``."""
    if not isinstance(raw, Mapping):
        raise ConfigError("must be a table with algorithm and params")
    unknown = sorted(set(raw) - {"algorithm", "params"})
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}; known: algorithm, params")
    params = raw.get("params", {})
    if not isinstance(params, Mapping):
        raise ConfigError("params must map parameter names to numbers")
    return SurfacePolicy(raw.get("algorithm", ""), dict(params))
