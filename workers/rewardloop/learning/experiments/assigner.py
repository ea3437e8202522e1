"""Assignment across every running experiment, compiled for the request path.

`Assigner` turns the experiments into one table per layer (bucket → experiment and variant), so a
user's assignments cost one hash per layer and a list lookup, whatever the number of experiments
(bench/assign.py: 50 experiments in well under 0.1 ms). Targeting is checked only for the
experiment whose bucket the user falls in.

Segment targeting: a condition on ``segment.<surface>`` tests the user's behaviour segment on that
surface (the id of the segment the user most likely belongs to, as text). Finding it asks the
user's shard, so the caller does so only for users whose buckets fall in such an experiment
(`segments_needed`) and passes it among the attributes.

Holdouts: a user in the first variant of a running holdout experiment gets that assignment (and
other holdouts') and no other; every other user is assigned as if there were no holdout.

>>> from rewardloop.learning.experiments.lifecycle import create, start
>>> from rewardloop.learning.experiments.spec import spec_from_dict
>>> spec = spec_from_dict("e", {"variants": {"a": 1, "b": 1}, "primary_metric": {"source": "click"}})
>>> assigner = Assigner([start(create(spec, 0), np.ones(BUCKETS, dtype=bool), 1)])
>>> sorted({v for u in range(100) for _, v in assigner.assign(f"user-{u}")})
['a', 'b']
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from rewardloop.learning.experiments.buckets import BUCKETS, buckets_of, salt_key
from rewardloop.learning.experiments.lifecycle import RUNNING, Experiment
from rewardloop.learning.experiments.spec import Condition

NO_ATTRIBUTES: Mapping[str, str] = {}
SEGMENT_PREFIX = "segment."


def segment_surface(attribute: str) -> str | None:
    """The surface a ``segment.<surface>`` targeting attribute is about; None for request attributes."""
    return attribute[len(SEGMENT_PREFIX) :] if attribute.startswith(SEGMENT_PREFIX) else None


@dataclass(frozen=True)
class _Slot:
    experiment: str
    variant: str
    targeting: tuple[Condition, ...]
    surfaces: tuple[str, ...]


class Assigner:
    """The running experiments' assignments; immutable (a changed catalogue compiles a new one)."""

    def __init__(self, experiments: Iterable[Experiment]):
        running = sorted((e for e in experiments if e.status == RUNNING), key=lambda e: e.name)
        by_layer: dict[str, list[Experiment]] = {}
        for experiment in running:
            by_layer.setdefault(experiment.spec.layer_key, []).append(experiment)
        layers = sorted(by_layer.items())
        rows = {name: row for row, (name, _) in enumerate(layers)}
        # One row of BUCKETS slot indices per layer, flattened: every layer's lookup is one gather.
        # Slots are numbered in experiment-name order, so sorted slot indices are sorted answers.
        self._owner = np.full(len(layers) * BUCKETS, -1, dtype=np.int32)
        self._offsets = np.arange(len(layers), dtype=np.int64) * BUCKETS
        self._salts = np.array([salt_key(_salt(name, members)) for name, members in layers], dtype=np.uint64)
        slots: list[_Slot] = []
        for experiment in running:
            spec = experiment.spec
            row = rows[spec.layer_key]
            for variant, _ in sorted(experiment.allocation.variants):
                self._owner[row * BUCKETS + experiment.allocation.buckets(variant)] = len(slots)
                slots.append(_Slot(spec.name, variant, spec.targeting, spec.surfaces))
        self._slots = tuple(slots)
        holdouts = {e.name for e in running if e.spec.holdout}
        self._holding = frozenset(
            i for i, s in enumerate(slots) if s.experiment in holdouts and s.variant == _control(running, s.experiment)
        )
        self._holdout_slots = frozenset(i for i, s in enumerate(slots) if s.experiment in holdouts)
        self._segments = {
            i: needed
            for i, s in enumerate(slots)
            if (needed := tuple(sorted({n for c in s.targeting if (n := segment_surface(c.attribute))})))
        }
        self._pairs = tuple((s.experiment, s.variant) for s in slots)
        self._plain = not any(s.targeting for s in slots)
        self.names = frozenset(e.name for e in running)
        self._surfaces = frozenset(s for e in running for s in e.spec.surfaces)

    def assign(
        self,
        user_id: str,
        attributes: Mapping[str, str] = NO_ATTRIBUTES,
        only: Collection[str] = (),
        surface: str = "",
    ) -> list[tuple[str, str]]:
        """(experiment, variant) for each running experiment the user is enrolled in, by name.

        ``only``: just these experiments; ``surface``: just experiments covering that surface.
        """
        if not self._slots:
            return []
        hits = self._owner[self._offsets + buckets_of(self._salts, user_id)]
        indices = np.sort(hits[hits >= 0]).tolist()
        if self._holding and not self._holding.isdisjoint(indices) and self._held(indices, attributes):
            indices = [i for i in indices if i in self._holdout_slots]
        if self._plain and not only and not surface:
            return [self._pairs[i] for i in indices]
        out = []
        for index in indices:
            slot = self._slots[index]
            if only and slot.experiment not in only:
                continue
            if surface and surface not in slot.surfaces:
                continue
            if not slot.targeting or all(c.matches(attributes) for c in slot.targeting):
                out.append(self._pairs[index])
        return out

    def segments_needed(self, user_id: str) -> tuple[str, ...]:
        """The surfaces whose segment the user's assignment depends on (usually none: then free)."""
        if not self._segments:
            return ()
        hits = self._owner[self._offsets + buckets_of(self._salts, user_id)]
        return tuple(sorted({s for i in hits[hits >= 0].tolist() for s in self._segments.get(i, ())}))

    def _held(self, indices: list[int], attributes: Mapping[str, str]) -> bool:
        """Whether a holdout whose first variant holds the user's bucket also targets the user."""
        return any(all(c.matches(attributes) for c in self._slots[i].targeting) for i in indices if i in self._holding)

    def covering(self, surface: str) -> bool:
        """Whether any running experiment covers ``surface`` (Recommend skips hashing when none does)."""
        return surface in self._surfaces


def _control(running: list[Experiment], name: str) -> str:
    return next(e.spec.control for e in running if e.name == name)


def _salt(layer: str, members: list[Experiment]) -> str:
    """An experiment of its own layer hashes with its own salt; a shared layer with the layer's name."""
    return members[0].spec.salt if layer.startswith("~") else f"layer:{layer}"
