"""Experiment assignment: a pure function of (experiment salt, user id).

No storage and no coordination: every front replica and every shard computes the same
variant for the same user. Two independent hashes decide whether the user is in the
experiment's traffic share and, if so, which variant (by cumulative weight).

>>> from rewardloop.learning.experiments import ExperimentConfig
>>> exp = ExperimentConfig("e", (("control", 1.0), ("treatment", 1.0)), "salt", 1.0, ())
>>> assign(exp, "alice") == assign(exp, "alice")
True
>>> sorted({assign(exp, f"user-{i}") for i in range(200)})
['control', 'treatment']
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rewardloop.learning.params import ConfigError, check_name, reject_unknown, within


@dataclass(frozen=True)
class ExperimentConfig:
    """An A/B experiment; it checks itself, so a hand-built one is as valid as a loaded one."""

    name: str
    variants: tuple[tuple[str, float], ...]
    salt: str
    traffic: float
    surfaces: tuple[str, ...]

    def __post_init__(self) -> None:
        check_name("name", self.name)
        if len(self.variants) < 2:
            raise ConfigError("variants must map at least two variant names to weights")
        for variant, weight in self.variants:
            check_name("variants", variant)
            if not isinstance(weight, int | float) or not weight > 0:
                raise ConfigError(f"variants.{variant} must be a weight > 0, got {weight!r}")
        if not isinstance(self.traffic, int | float) or not 0 < self.traffic <= 1:
            raise ConfigError(f"traffic must be in (0, 1], got {self.traffic!r}")
        object.__setattr__(self, "variants", tuple((v, float(w)) for v, w in self.variants))
        object.__setattr__(self, "traffic", float(self.traffic))


def experiment_from_dict(name: str, spec: Mapping[str, Any], surfaces: Collection[str]) -> ExperimentConfig:
    """``[experiments.<name>]``: the TOML shape; the experiment checks its values, this its surfaces."""
    where = f"experiments.{name}"
    check_name(where, name)
    reject_unknown(where, spec, {"variants", "salt", "traffic", "surfaces"})
    variants = spec.get("variants")
    if not isinstance(variants, Mapping) or len(variants) < 2:
        raise ConfigError(f"{where}.variants must map at least two variant names to weights")
    try:
        experiment = ExperimentConfig(
            name=name,
            variants=tuple((v, w) for v, w in variants.items()),
            salt=str(spec.get("salt", name)),
            traffic=spec.get("traffic", 1.0),
            surfaces=tuple(spec.get("surfaces", ())),
        )
    except ConfigError as exc:
        raise within(where, exc) from exc
    for surface in experiment.surfaces:
        if surface not in surfaces:
            raise ConfigError(f"{where}.surfaces: unknown surface {surface!r}")
    return experiment


def _unit_hash(*parts: str) -> float:
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(experiment: ExperimentConfig, user_id: str) -> str | None:
    """The user's variant, or None when the user falls outside the traffic share."""
    if _unit_hash(experiment.salt, "traffic", user_id) >= experiment.traffic:
        return None
    point = _unit_hash(experiment.salt, "variant", user_id) * sum(w for _, w in experiment.variants)
    for variant, weight in experiment.variants:
        point -= weight
        if point < 0:
            return variant
    return experiment.variants[-1][0]


def assign_all(experiments: Iterable[ExperimentConfig], user_id: str) -> list[tuple[str, str]]:
    """(experiment, variant) for every experiment the user is in, ordered by name."""
    out = []
    for experiment in sorted(experiments, key=lambda e: e.name):
        variant = assign(experiment, user_id)
        if variant is not None:
            out.append((experiment.name, variant))
    return out
