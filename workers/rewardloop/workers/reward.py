"""Feedback signals and the rewards they become.

Each signal has a documented value range (mirrored in protos/rewardloop/v1/feedback.proto)
and a transform into a reward in [0, 1]. One event is one observation for the policy.

>>> reward_for(Signal.DWELL, 45.0), reward_for(Signal.RATING, 4.0)
(1.0, 0.75)
>>> check_value(Signal.DWELL, -1.0)
'dwell value must be seconds in [0, 86400], got -1.0'
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass


class Signal(enum.IntEnum):
    """Numbers match rewardloop.v1.Signal."""

    CLICK = 1
    DWELL = 2
    RATING = 3
    LIKE = 4


# Dwell saturates: 30 s on an item counts as fully engaged (typical article read-start).
DWELL_SATURATION_SECONDS = 30.0


@dataclass(frozen=True)
class SignalSpec:
    low: float
    high: float
    unit: str
    transform: Callable[[float], float]
    integral: bool = False


SIGNALS: dict[Signal, SignalSpec] = {
    Signal.CLICK: SignalSpec(0.0, 1.0, "0 or 1", lambda v: v, integral=True),
    Signal.DWELL: SignalSpec(0.0, 86_400.0, "seconds", lambda v: min(v / DWELL_SATURATION_SECONDS, 1.0)),
    Signal.RATING: SignalSpec(1.0, 5.0, "stars", lambda v: (v - 1.0) / 4.0),
    Signal.LIKE: SignalSpec(0.0, 1.0, "0 or 1", lambda v: v, integral=True),
}


def check_value(signal: Signal, value: float) -> str | None:
    """Why `value` is invalid for `signal`, or None when it is valid."""
    spec = SIGNALS[signal]
    name = signal.name.lower()
    if not math.isfinite(value):
        return f"{name} value must be finite, got {value}"
    if spec.integral and value not in (0.0, 1.0):
        return f"{name} value must be {spec.unit}, got {value}"
    if not spec.low <= value <= spec.high:
        return f"{name} value must be {spec.unit} in [{spec.low:g}, {spec.high:g}], got {value}"
    return None


def reward_for(signal: Signal, value: float) -> float:
    """Reward in [0, 1] for a valid (signal, value)."""
    return float(SIGNALS[signal].transform(value))
