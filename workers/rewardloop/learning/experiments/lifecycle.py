"""An experiment's life: draft → running ⇄ paused → stopped, each change a new version.

The functions here are pure: each takes the experiment (and, when it allocates, the buckets its
layer has free) and returns the changed experiment, or raises `LifecycleError` saying why the
change is not allowed in its state. The store applies them atomically and audits them.

Only running experiments enrol users. A paused one keeps its buckets (its users come back to the
same variants when it resumes) and enrols nobody meanwhile; a stopped one lets its buckets go.

>>> from rewardloop.learning.experiments.spec import spec_from_dict
>>> spec = spec_from_dict("e", {"variants": {"a": 1, "b": 1}, "primary_metric": {"source": "click"},
...                             "ramp": [{"coverage": 0.1}, {"coverage": 0.5}]})
>>> draft = create(spec, now_ms=1)
>>> running = start(draft, np.ones(BUCKETS, dtype=bool), now_ms=2)
>>> running.status, running.version, running.coverage, running.allocation.enrolled()
('running', 2, 0.1, 1000)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from rewardloop.learning.experiments.buckets import BUCKETS, Allocation, resize
from rewardloop.learning.experiments.spec import ExperimentSpec, spec_from_dict, spec_to_dict

DRAFT, RUNNING, PAUSED, STOPPED = "draft", "running", "paused", "stopped"
STATUSES = (DRAFT, RUNNING, PAUSED, STOPPED)
API, MONITOR = "api", "monitor"
# What may not change once users were enrolled: it would re-hash or re-label them.
FROZEN_WHEN_STARTED = ("layer", "salt")


class LifecycleError(Exception):
    """A change the experiment's state does not allow (the API answers FAILED_PRECONDITION)."""


@dataclass(frozen=True)
class Experiment:
    spec: ExperimentSpec
    status: str = DRAFT
    version: int = 1
    allocation: Allocation = field(default_factory=lambda: Allocation(()))
    coverage: float = 0.0
    ramp_step: int = -1
    created_ms: int = 0
    updated_ms: int = 0
    started_ms: int = 0
    stopped_ms: int = 0
    reason: str = ""
    winner: str = ""
    stepped_ms: int = 0  # when the current ramp step (or the start) was reached
    changed_by: str = API  # who made the last change: API (an operator) or MONITOR
    # The planning answer when last created, updated or started (`results.Planning` as a dict).
    planning: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def holds_buckets(self) -> bool:
        return self.status in (RUNNING, PAUSED)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": spec_to_dict(self.spec), "status": self.status, "version": self.version,
            "allocation": self.allocation.to_dict(), "coverage": self.coverage, "ramp_step": self.ramp_step,
            "created_ms": self.created_ms, "updated_ms": self.updated_ms, "started_ms": self.started_ms,
            "stopped_ms": self.stopped_ms, "reason": self.reason, "winner": self.winner,
            "stepped_ms": self.stepped_ms, "changed_by": self.changed_by, "planning": dict(self.planning),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, name: str, raw: Mapping[str, Any]) -> Experiment:
        fields = {k: v for k, v in raw.items() if k not in ("spec", "allocation")}
        return cls(spec=spec_from_dict(name, raw["spec"]), allocation=Allocation.from_dict(raw["allocation"]), **fields)


def layer_free(experiments: Mapping[str, Experiment], layer: str, excluding: str = "") -> np.ndarray:
    """The buckets of ``layer`` that no running or paused experiment but ``excluding`` holds."""
    free = np.ones(BUCKETS, dtype=bool)
    for other in experiments.values():
        if other.name != excluding and other.holds_buckets and other.spec.layer_key == layer:
            free &= ~other.allocation.held()
    return free


def _changed(experiment: Experiment, now_ms: int, by: str = API, **changes: Any) -> Experiment:
    return replace(experiment, version=experiment.version + 1, updated_ms=now_ms, changed_by=by, **changes)


def create(spec: ExperimentSpec, now_ms: int) -> Experiment:
    return Experiment(spec=spec, allocation=Allocation.empty(spec.variant_names), created_ms=now_ms, updated_ms=now_ms)


def update(experiment: Experiment, spec: ExperimentSpec, free: np.ndarray, now_ms: int) -> Experiment:
    """A new definition. Once started: variants may be added or re-weighted but not removed, and the
    layer and salt stay; the allocation follows new weights or coverage without moving anyone."""
    if experiment.status == STOPPED:
        raise LifecycleError(f"experiment {experiment.name!r} is stopped; create a new one")
    if experiment.status == DRAFT:
        return _changed(experiment, now_ms, spec=spec, allocation=Allocation.empty(spec.variant_names))
    old = experiment.spec
    for name in FROZEN_WHEN_STARTED:
        if getattr(spec, name) != getattr(old, name):
            raise LifecycleError(f"{name} cannot change once the experiment has started (it would move users)")
    removed = [v for v in old.variant_names if v not in spec.variant_names]
    if removed:
        raise LifecycleError(f"variants: {removed} cannot be removed once started; give them no traffic by stopping")
    if spec.control != old.control:
        raise LifecycleError(f"variants: the control ({old.control!r}) must stay the first variant")
    changed = [v for v in old.variant_names if spec.policies.get(v, {}) != old.policies.get(v, {})]
    if changed:
        # A variant's arm would then hold the evidence of two policies.
        raise LifecycleError(f"variants: the policies of {changed} cannot change once the experiment has started")
    coverage = min(experiment.coverage, spec.coverage)
    allocation = resize(experiment.allocation, dict(spec.variants), coverage, free)
    return _changed(experiment, now_ms, spec=spec, allocation=allocation, coverage=coverage)


def start(experiment: Experiment, free: np.ndarray, now_ms: int) -> Experiment:
    """Draft → running at the ramp's first coverage; paused → running again, as it was."""
    if experiment.status == RUNNING:
        raise LifecycleError(f"experiment {experiment.name!r} is already running")
    if experiment.status == STOPPED:
        raise LifecycleError(f"experiment {experiment.name!r} is stopped; create a new one")
    if experiment.status == PAUSED:
        return _changed(experiment, now_ms, status=RUNNING, reason="")
    spec = experiment.spec
    coverage = spec.start_coverage()
    allocation = resize(experiment.allocation, dict(spec.variants), coverage, free)
    if allocation.enrolled() == 0:
        raise LifecycleError(f"layer {spec.layer!r} has no free traffic: its other experiments hold all of it")
    return _changed(
        experiment, now_ms, status=RUNNING, allocation=allocation, coverage=coverage,
        ramp_step=0 if spec.ramp else -1, started_ms=now_ms, stepped_ms=now_ms, reason="",
    )  # fmt: skip


def pause(experiment: Experiment, now_ms: int, reason: str = "") -> Experiment:
    if experiment.status != RUNNING:
        raise LifecycleError(f"experiment {experiment.name!r} is {experiment.status}, not running")
    return _changed(experiment, now_ms, status=PAUSED, reason=reason)


def stop(experiment: Experiment, now_ms: int, reason: str = "", winner: str = "", by: str = API) -> Experiment:
    """Ends enrolment for good and frees the buckets; ``winner`` records the decision (may be "")."""
    if experiment.status == STOPPED:
        raise LifecycleError(f"experiment {experiment.name!r} is already stopped")
    if winner and winner not in experiment.spec.variant_names:
        raise LifecycleError(f"winner: {winner!r} is not a variant of {experiment.name!r}")
    return _changed(experiment, now_ms, by, status=STOPPED, stopped_ms=now_ms, reason=reason, winner=winner)


def ramp(
    experiment: Experiment, free: np.ndarray, now_ms: int, coverage: float | None = None, by: str = API
) -> Experiment:
    """Raise (or lower) coverage: to ``coverage``, or else to the ramp schedule's next step."""
    if experiment.status not in (RUNNING, PAUSED):
        raise LifecycleError(f"experiment {experiment.name!r} is {experiment.status}; only a started one ramps")
    spec = experiment.spec
    step = experiment.ramp_step
    if coverage is None:
        if step + 1 >= len(spec.ramp):
            raise LifecycleError(f"experiment {experiment.name!r} is at the last step of its ramp")
        step += 1
        coverage = spec.ramp[step].coverage
    elif not 0 < coverage <= spec.coverage:
        raise LifecycleError(f"coverage must be in (0, {spec.coverage:g}] (the spec's coverage), got {coverage:g}")
    allocation = resize(experiment.allocation, dict(spec.variants), coverage, free)
    return _changed(experiment, now_ms, by, allocation=allocation, coverage=coverage, ramp_step=step, stepped_ms=now_ms)
