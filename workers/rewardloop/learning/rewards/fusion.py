"""Fusing the feedback events of one decision-item into one reward: order-independent and idempotent.

**The rule.** The reward of a decision-item (one item of one decision) is a function of the *set* of
its distinct training events (deduplicated by ``event_id``), so replays, retries and reordering give
the same reward, bit for bit:

1. events of one signal combine by the signal's aggregate (``signals.py``): ``max``; ``latest``, the
   value of the event with the largest ``(occurred_at_ms, event_id)``, so a later rating or un-like
   replaces an earlier one whatever order they arrive in; or ``sum``, exact (``math.fsum``);
2. each signal with a non-zero weight and at least one training event contributes
   ``weight * min(transform(aggregate), cap)`` (``config.py``);
3. ``reward = clip(sum of contributions, 0, 1)``; with no contributing signal (nothing arrived, or
   only zero-weight signals such as impressions) the reward is the surface's ``default_reward``.

**Window and late events.** An event is *on time* when it occurred at most ``window_seconds`` after
the decision (boundary included), else *late*. Lateness is judged on ``occurred_at_ms``, the event's
own time, never on arrival, so a replay decides it the same way. An event that occurred *before*
its decision counts as on time: callers' clocks drift and the decision id already ties them. Late
events are never dropped: the state records them (and deduplicates their retries); under
``late_rule = "apply"`` (the default) they change the reward exactly as on-time events do, under
``"ignore_for_training"`` they are kept for analysis and train nothing.

**Incremental use.** The service keeps a :class:`FusionState` per decision-item; ``add`` returns
``(old, new)`` rewards. Before any training event the reward is ``default_reward``: the service
learns that value when the window closes empty (:meth:`DecisionWindow.is_closed`) or at the first
event, and every later change as the correction ``new - old``. The corrections telescope, so what
the model has learned is the final reward whatever the arrival order; a duplicate returns ``(r, r)``.
With time decay, weight the first value and all its corrections by the *decision's* time
(``decay.py``) so that they cancel exactly.

>>> from rewardloop.learning.rewards.config import RewardConfig
>>> config = RewardConfig()
>>> state = FusionState(config, decided_at_ms=0)
>>> state.add(Event("e1", Signal.CLICK, 1.0, occurred_at_ms=2_000, received_at_ms=2_100))
(0.0, 1.0)
>>> state.add(Event("e2", Signal.SKIP, 1.0, occurred_at_ms=9_000, received_at_ms=9_100))
(1.0, 0.0)
>>> state.add(Event("e2", Signal.SKIP, 1.0, occurred_at_ms=9_000, received_at_ms=60_000))  # a retry
(0.0, 0.0)
>>> fuse(state.events, config, decided_at_ms=0) == state.reward
True
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rewardloop.learning.rewards.config import LateRule, RewardConfig
from rewardloop.learning.rewards.signals import SIGNALS, Aggregate, Event, Signal


class EventConflict(ValueError):
    """Two events share an ``event_id`` but report different facts (a caller reusing idempotency keys)."""


class Timing(enum.Enum):
    ON_TIME = "on_time"
    LATE = "late"


def late_event_trains(late_rule: LateRule) -> bool:
    """Whether an event that occurred after its decision's window changes the reward under ``late_rule``."""
    return late_rule is LateRule.APPLY


@dataclass(frozen=True)
class DecisionWindow:
    """The reward window of one decision: ``[decided_at_ms, decided_at_ms + window_ms]`` in event time.

    >>> window = DecisionWindow(decided_at_ms=1_000, window_ms=60_000, late_rule=LateRule.IGNORE_FOR_TRAINING)
    >>> window.timing(61_000), window.timing(61_001), window.trains(61_001), window.is_closed(now_ms=61_001)
    (<Timing.ON_TIME: 'on_time'>, <Timing.LATE: 'late'>, False, True)
    """

    decided_at_ms: int
    window_ms: int
    late_rule: LateRule = LateRule.APPLY

    @classmethod
    def of(cls, decided_at_ms: int, config: RewardConfig) -> DecisionWindow:
        return cls(decided_at_ms, config.window_ms, config.late_rule)

    @property
    def closes_at_ms(self) -> int:
        return self.decided_at_ms + self.window_ms

    def timing(self, occurred_at_ms: int) -> Timing:
        return Timing.ON_TIME if occurred_at_ms <= self.closes_at_ms else Timing.LATE

    def trains(self, occurred_at_ms: int) -> bool:
        """Whether an event that occurred at ``occurred_at_ms`` counts in the reward."""
        return self.timing(occurred_at_ms) is Timing.ON_TIME or late_event_trains(self.late_rule)

    def is_closed(self, now_ms: int) -> bool:
        """Whether the window is over at ``now_ms`` (server clock): time to learn the default reward."""
        return now_ms > self.closes_at_ms


def fuse(events: Iterable[Event], config: RewardConfig, decided_at_ms: int | None = None) -> float:
    """The reward of the distinct ``events`` of one decision-item (rule in the module docstring).

    ``decided_at_ms`` None means no window: every event is on time. Events are assumed valid
    (``quality.assess`` accepted them); :class:`EventConflict` if two share an id but not their facts.
    """
    distinct: dict[str, Event] = {}
    for event in events:
        _check_same(distinct.setdefault(event.event_id, event), event)
    window = None if decided_at_ms is None else DecisionWindow.of(decided_at_ms, config)
    by_signal: dict[Signal, list[Event]] = {}
    for event in distinct.values():
        if window is None or window.trains(event.occurred_at_ms):
            by_signal.setdefault(event.signal, []).append(event)
    return _combine({signal: _aggregate(group) for signal, group in by_signal.items()}, config)


class FusionState:
    """The incremental form of :func:`fuse` for one decision-item: same result after any arrival order.

    Holds every distinct event it was given (training or not); ``to_dict``/``from_dict`` carry it
    through a snapshot as plain values.
    """

    def __init__(self, config: RewardConfig, decided_at_ms: int | None = None) -> None:
        self.config = config
        self.decided_at_ms = decided_at_ms
        self._window = None if decided_at_ms is None else DecisionWindow.of(decided_at_ms, config)
        self._events: dict[str, Event] = {}
        self._aggregates: dict[Signal, float] = {}
        self._latest: dict[Signal, tuple[int, str]] = {}
        self._sum_terms: dict[Signal, list[float]] = {}
        self._reward = config.default_reward

    @property
    def reward(self) -> float:
        return self._reward

    @property
    def rewarded(self) -> bool:
        """Whether a training event of a weighted signal has arrived (the reward is no longer the default)."""
        return any(self.config.rule(signal).weight != 0.0 for signal in self._aggregates)

    @property
    def events(self) -> tuple[Event, ...]:
        """Every distinct event recorded, training or not, ordered by ``event_id``."""
        return tuple(self._events[key] for key in sorted(self._events))

    @property
    def ignored(self) -> tuple[Event, ...]:
        """The recorded events that train nothing (late ones under ``ignore_for_training``)."""
        return tuple(e for e in self.events if not self.trains(e))

    def trains(self, event: Event) -> bool:
        return self._window is None or self._window.trains(event.occurred_at_ms)

    def add(self, event: Event) -> tuple[float, float]:
        """Record ``event``; the reward before and after. A duplicate ``event_id`` changes nothing."""
        known = self._events.get(event.event_id)
        if known is not None:
            _check_same(known, event)
            # Keep the first receipt, so that the recorded events too are independent of arrival order.
            if event.received_at_ms < known.received_at_ms:
                self._events[event.event_id] = event
            return self._reward, self._reward
        self._events[event.event_id] = event
        if not self.trains(event):
            return self._reward, self._reward
        self._fold(event)
        old, self._reward = self._reward, _combine(self._aggregates, self.config)
        return old, self._reward

    def _fold(self, event: Event) -> None:
        signal, value = event.signal, event.value
        kind = SIGNALS[signal].aggregate
        if kind is Aggregate.MAX:
            self._aggregates[signal] = max(self._aggregates.get(signal, -math.inf), value)
        elif kind is Aggregate.LATEST:
            key = (event.occurred_at_ms, event.event_id)
            if signal not in self._latest or key > self._latest[signal]:
                self._latest[signal] = key
                self._aggregates[signal] = value
        else:
            terms = self._sum_terms.setdefault(signal, [])
            terms.append(value)
            self._aggregates[signal] = math.fsum(terms)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able values; ``from_dict`` with the same config rebuilds an equal state."""
        return {
            "decided_at_ms": self.decided_at_ms,
            "events": [[e.event_id, int(e.signal), e.value, e.occurred_at_ms, e.received_at_ms] for e in self.events],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], config: RewardConfig) -> FusionState:
        state = cls(config, raw["decided_at_ms"])
        for event_id, signal, value, occurred_at_ms, received_at_ms in raw["events"]:
            state.add(Event(event_id, Signal(signal), float(value), int(occurred_at_ms), int(received_at_ms)))
        return state

    def __len__(self) -> int:
        """Distinct events recorded (training or not)."""
        return len(self._events)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FusionState):
            return NotImplemented
        return (self.config, self.to_dict(), self._reward) == (other.config, other.to_dict(), other._reward)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"FusionState(reward={self._reward!r}, events={len(self._events)}, decided_at_ms={self.decided_at_ms})"


def _check_same(known: Event, event: Event) -> None:
    if not known.same_fact(event):
        raise EventConflict(f"event_id {event.event_id!r} was already recorded as {known}, now {event}")


def _aggregate(events: list[Event]) -> float:
    kind = SIGNALS[events[0].signal].aggregate
    if kind is Aggregate.MAX:
        return max(e.value for e in events)
    if kind is Aggregate.LATEST:
        return max(events, key=lambda e: (e.occurred_at_ms, e.event_id)).value
    return math.fsum(e.value for e in events)


def _combine(aggregates: Mapping[Signal, float], config: RewardConfig) -> float:
    contributions = [
        config.rule(signal).contribution(value)
        for signal, value in sorted(aggregates.items())
        if config.rule(signal).weight != 0.0
    ]
    if not contributions:
        return config.default_reward
    # + 0.0 turns -0.0 into 0.0, so equal rewards are equal bit for bit.
    return min(max(math.fsum(contributions), 0.0), 1.0) + 0.0
