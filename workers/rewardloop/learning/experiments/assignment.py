"""Experiment assignment: a pure function of (experiment salt, user id).

No storage and no coordination: every front replica and every shard computes the same
variant for the same user. Two independent hashes decide whether the user is in the
experiment's traffic share and, if so, which variant (by cumulative weight).

>>> from rewardloop.workers.config import ExperimentConfig
>>> exp = ExperimentConfig("e", (("control", 1.0), ("treatment", 1.0)), "salt", 1.0, ())
>>> assign(exp, "alice") == assign(exp, "alice")
True
>>> sorted({assign(exp, f"user-{i}") for i in range(200)})
['control', 'treatment']
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from rewardloop.workers.config import ExperimentConfig


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
