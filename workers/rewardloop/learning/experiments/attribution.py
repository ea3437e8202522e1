"""Streaming metrics: each feedback event updates its user's metric values in the experiments the
user was exposed to, and the per-variant sums those values add up to.

A metric is a per-user number (``spec.Metric``): did the user convert, how many events, the sum of
their values. Per variant the service keeps n (exposed users: counted at exposure), Σy and Σy²;
an event moves one user's y from y₀ to y₁, so the sums move by y₁ - y₀ and y₁² - y₀². Results are
then O(1) to read at any moment, and users with no event count with y = 0 as they should.

Only events that occurred at or after the user's exposure count (what the user did before cannot
be the variant's doing), and only while the experiment is running or paused.

CUPED's covariate: the user's value of the primary metric over the ``cuped_days`` before the first
exposure (``pre_period_value``), fixed once computed. Per variant the service adds Σx, Σx² and Σxy;
an event that moves y by Δy moves Σxy by x·Δy.

>>> from rewardloop.learning.experiments.spec import spec_from_dict
>>> spec = spec_from_dict("e", {"variants": {"a": 1, "b": 1},
...                             "primary_metric": {"source": "click", "aggregate": "count"}})
>>> update = attribute({"e": spec}, {"e": ("b", 100)}, {}, [Event("click", 1.0, 0.0, "home", 150)])
>>> update.values, update.sums
({'m:e:click_count': 1.0}, {('e', 'b', 'click_count'): (1.0, 1.0)})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rewardloop.learning.experiments.spec import ExperimentSpec, Metric

EXPOSURE_PREFIX = "x:"
VALUE_PREFIX = "m:"
COVARIATE_PREFIX = "c:"
ATTRIBUTED_FIELD = "attributed"
"""The user's hash: the feedback-log id of the last event attributed (a retry at or before it is not
attributed again; one after it -- its shard died before attributing it -- is)."""
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Event:
    """What attribution needs of a feedback event: its signal's name, value, own reward, surface, time."""

    signal: str
    value: float
    reward: float
    surface: str
    occurred_at_ms: int


@dataclass
class Update:
    """Per-user values to write (field -> y) and per (experiment, variant, metric) sums to add (Δy, Δy²)."""

    values: dict[str, float] = field(default_factory=dict)
    sums: dict[tuple[str, str, str], tuple[float, float]] = field(default_factory=dict)


def value_field(experiment: str, metric: str) -> str:
    return f"{VALUE_PREFIX}{experiment}:{metric}"


def covariate_field(experiment: str) -> str:
    return f"{COVARIATE_PREFIX}{experiment}"


def exposure_value(variant: str, at_ms: int) -> str:
    return f"{variant}|{at_ms}"


def parse_exposures(fields: Mapping[str, str]) -> dict[str, tuple[str, int]]:
    """The user's exposures from their hash: experiment -> (variant, first exposure ms)."""
    out = {}
    for key, raw in fields.items():
        if key.startswith(EXPOSURE_PREFIX):
            variant, _, at = raw.rpartition("|")
            out[key[len(EXPOSURE_PREFIX) :]] = (variant, int(at))
    return out


def experiment_of(field: str) -> str | None:
    """The experiment a field of the user's hash is about (``x:<e>`` or ``m:<e>:<metric>``)."""
    if field.startswith((EXPOSURE_PREFIX, COVARIATE_PREFIX)):
        return field[len(EXPOSURE_PREFIX) :]
    if field.startswith(VALUE_PREFIX):
        return field[len(VALUE_PREFIX) :].rpartition(":")[0]
    return None


def _contribution(metric: Metric, event: Event) -> float | None:
    """The event's value for ``metric``, or None when it is not about the metric."""
    if metric.surface and metric.surface != event.surface:
        return None
    if metric.source == "reward":
        return event.reward
    return event.value if metric.source == event.signal else None


def _next(metric: Metric, y: float, value: float) -> float:
    if metric.aggregate == "conversion":
        return 1.0 if y > 0 or value > 0 else 0.0
    if metric.aggregate == "count":
        return y + 1.0
    return y + value


def attribute(
    specs: Mapping[str, ExperimentSpec],
    exposures: Mapping[str, tuple[str, int]],
    values: Mapping[str, float],
    events: Iterable[Event],
) -> Update:
    """The update one user's ``events`` (in order) make, given the user's exposures and current values.

    ``specs``: the experiments that still collect metrics (running or paused), by name.
    """
    update = Update()
    current = dict(values)
    for event in events:
        for name, (variant, exposed_ms) in exposures.items():
            spec = specs.get(name)
            if spec is None or event.occurred_at_ms < exposed_ms:
                continue
            for metric in spec.metrics:
                value = _contribution(metric, event)
                if value is None:
                    continue
                key = value_field(name, metric.name)
                before = current.get(key, 0.0)
                after = _next(metric, before, value)
                if after == before:
                    continue
                current[key] = update.values[key] = after
                sums_key = (name, variant, metric.name)
                dy, dyy = update.sums.get(sums_key, (0.0, 0.0))
                update.sums[sums_key] = (dy + after - before, dyy + after * after - before * before)
    return update


def pre_period_value(metric: Metric, events: Iterable[Event], exposed_ms: int, days: float) -> float:
    """The user's value of ``metric`` over the ``days`` before ``exposed_ms``: CUPED's covariate."""
    start = exposed_ms - days * DAY_MS
    y = 0.0
    for event in events:
        if start <= event.occurred_at_ms < exposed_ms:
            value = _contribution(metric, event)
            if value is not None:
                y = _next(metric, y, value)
    return y
