"""The signal catalogue: every kind of feedback, its value's unit and range, and its default transform.

Numbers match ``rewardloop.v1.Signal`` (CLICK=1 .. LIKE=4 are the original four). Each signal has a
:class:`SignalSpec`: the unit and valid range of its value, whether the value must be a whole
number, its polarity (does more of it mean the user liked the item?), the commutative aggregate
that combines several events of that signal about one decision-item (see ``fusion.py``), and the
default transform into a number that is (mostly) in [0, 1]:

============  ======================================  ===========  ========  =========  ====================
signal        unit / meaning                          range        polarity  aggregate  default transform
============  ======================================  ===========  ========  =========  ====================
impression    1 = shown                               0 or 1       neutral   max        linear: v
click         1 = clicked, 0 = shown and not clicked  0 or 1       positive  max        linear: v
dwell         seconds on the item                     [0, 86400]   positive  max        saturate, scale 30
rating        stars (fractions allowed)               [1, 5]       positive  latest     (v - 1) / 4
like          1 = liked, 0 = like withdrawn           0 or 1       positive  latest     linear: v
completion    fraction of the item consumed           [0, 1]       positive  max        linear: v
dislike       1 = disliked, 0 = dislike withdrawn     0 or 1       negative  latest     linear: v
share         1 = shared                              0 or 1       positive  max        linear: v
comment       1 = commented                           0 or 1       positive  max        linear: v
bookmark      1 = saved, 0 = removed                  0 or 1       positive  latest     linear: v
purchase      currency units (the surface's)          [0, 1e6]     positive  sum        log1p, scale 100
skip          1 = skipped                             0 or 1       negative  max        linear: v
hide          1 = hidden                              0 or 1       negative  max        linear: v
report        1 = reported (abuse, spam)              0 or 1       negative  max        linear: v
session_end   1 = the user ended the agent session    0 or 1       neutral   max        linear: v
============  ======================================  ===========  ========  =========  ====================

"0 or 1" signals are *integral*: 0.5 is rejected. Default weights: 1 for positive signals, -1 for
negative ones, 0 for the neutral ones, impression and session_end (so a caller sending one signal gets
the reward reward.py gave it). ``session_end`` (the user ended the agent session after the decision)
moves no reward: on an agent surface the feedback worker ends the user's session there, the decision
being its last step; on other surfaces it is only recorded.

Transforms map a value, never a sign: a negative signal's transform is still >= 0 and its *weight*
(``config.py``) is <= 0. Kinds: ``linear`` ``(v - offset) / scale``, ``saturate`` ``min(v / scale, 1)``,
``log1p`` ``min(ln(1 + v) / ln(1 + scale), 1)`` (1 at ``v = scale``), ``threshold`` ``1 if v >= at else 0``.

>>> check_value(Signal.DWELL, -1.0)
'dwell value must be seconds in [0, 86400], got -1.0'
>>> check_value(Signal.SKIP, 0.5)
'skip value must be 0 or 1 (1 = skipped), got 0.5'
>>> [SIGNALS[s].transform(v) for s, v in [(Signal.DWELL, 45.0), (Signal.RATING, 4.0), (Signal.PURCHASE, 100.0)]]
[1.0, 0.75, 1.0]
>>> parse_signal(99)
Traceback (most recent call last):
...
ValueError: signal must be one of 1..15, got 99
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from rewardloop.learning.params import ConfigError, positive


class Signal(enum.IntEnum):
    """Kind of feedback; numbers match ``rewardloop.v1.Signal`` (0, unspecified, is not a signal)."""

    CLICK = 1
    DWELL = 2
    RATING = 3
    LIKE = 4
    IMPRESSION = 5
    COMPLETION = 6
    DISLIKE = 7
    SHARE = 8
    COMMENT = 9
    BOOKMARK = 10
    PURCHASE = 11
    SKIP = 12
    HIDE = 13
    REPORT = 14
    SESSION_END = 15

    @property
    def key(self) -> str:
        """The signal's name in configs and messages, e.g. ``"dwell"``."""
        return self.name.lower()


class Polarity(enum.Enum):
    """Whether more of a signal means the user liked the item; it fixes the sign a weight may take."""

    POSITIVE = "positive"
    NEGATIVE = "negative"
    # Says nothing about taste (an impression, a session end): a weight of either sign is allowed, default 0.
    NEUTRAL = "neutral"


class Aggregate(enum.Enum):
    """How several events of one signal about one decision-item combine (all commutative)."""

    # Largest value: "did it ever happen", or the furthest a progress report got.
    MAX = "max"
    # Value of the event with the largest (occurred_at_ms, event_id): the user's last word.
    LATEST = "latest"
    # Exact sum (math.fsum) of the values: amounts that add up, like several purchases.
    SUM = "sum"


TRANSFORM_KINDS = ("linear", "saturate", "log1p", "threshold")


@dataclass(frozen=True)
class Transform:
    """Maps a signal's (aggregated) value to a number, validated on construction.

    ``scale`` is used by linear, saturate and log1p; ``offset`` by linear; ``at`` by threshold.

    >>> Transform("saturate", scale=30.0)(15.0)
    0.5
    >>> Transform("threshold", at=0.9)(0.95), Transform("linear", scale=4.0, offset=1.0)(3.0)
    (1.0, 0.5)
    >>> try:
    ...     Transform("sqrt")
    ... except ConfigError as exc:
    ...     print(exc)
    transform must be one of linear, saturate, log1p, threshold, got 'sqrt'
    """

    kind: str
    scale: float = 1.0
    offset: float = 0.0
    at: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in TRANSFORM_KINDS:
            raise ConfigError(f"transform must be one of {', '.join(TRANSFORM_KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "scale", positive("scale", self.scale))
        for name in ("offset", "at"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))

    def __call__(self, value: float) -> float:
        if self.kind == "linear":
            return (value - self.offset) / self.scale
        if self.kind == "saturate":
            return min(value / self.scale, 1.0)
        if self.kind == "log1p":
            return min(math.log1p(max(value, 0.0)) / math.log1p(self.scale), 1.0)
        return 1.0 if value >= self.at else 0.0

    def to_dict(self) -> dict[str, object]:
        """The keys a config table gives for this transform (its kind and the parameters it uses)."""
        params = {"linear": ("scale", "offset"), "saturate": ("scale",), "log1p": ("scale",), "threshold": ("at",)}
        return {"transform": self.kind, **{name: getattr(self, name) for name in params[self.kind]}}


@dataclass(frozen=True)
class SignalSpec:
    """What a signal's value means and how it becomes a reward by default."""

    unit: str
    low: float
    high: float
    polarity: Polarity
    aggregate: Aggregate
    transform: Transform
    integral: bool = False
    # Weight in the fused reward when a surface's config does not set one (see config.py).
    default_weight: float = 1.0

    @property
    def expected(self) -> str:
        """What a valid value looks like, as error messages say it."""
        if self.integral and (self.low, self.high) == (0.0, 1.0):
            return f"0 or 1 ({self.unit})"
        whole = "a whole number of " if self.integral else ""
        return f"{whole}{self.unit} in [{self.low:.15g}, {self.high:.15g}]"


def _binary(unit: str, polarity: Polarity, aggregate: Aggregate = Aggregate.MAX, weight: float = 1.0) -> SignalSpec:
    return SignalSpec(unit, 0.0, 1.0, polarity, aggregate, Transform("linear"), integral=True, default_weight=weight)


_POS, _NEG = Polarity.POSITIVE, Polarity.NEGATIVE

# Dwell saturates: 30 s on an item counts as fully engaged (typical article read-start), as in reward.py.
DWELL_SATURATION_SECONDS = 30.0
# Purchases count on a log scale reaching 1 at 100 currency units: one large order must not drown every
# other signal, and 10 units (ln 11 / ln 101 = 0.52) is already clearly more than a click's worth of intent.
PURCHASE_FULL_VALUE = 100.0

SIGNALS: dict[Signal, SignalSpec] = {
    Signal.IMPRESSION: _binary("1 = shown", Polarity.NEUTRAL, weight=0.0),
    Signal.CLICK: _binary("1 = clicked, 0 = shown and not clicked", _POS),
    Signal.DWELL: SignalSpec(
        "seconds", 0.0, 86_400.0, _POS, Aggregate.MAX, Transform("saturate", scale=DWELL_SATURATION_SECONDS)
    ),
    Signal.RATING: SignalSpec("stars", 1.0, 5.0, _POS, Aggregate.LATEST, Transform("linear", scale=4.0, offset=1.0)),
    Signal.LIKE: _binary("1 = liked, 0 = like withdrawn", _POS, Aggregate.LATEST),
    Signal.COMPLETION: SignalSpec("fraction consumed", 0.0, 1.0, _POS, Aggregate.MAX, Transform("linear")),
    Signal.DISLIKE: _binary("1 = disliked, 0 = dislike withdrawn", _NEG, Aggregate.LATEST, weight=-1.0),
    Signal.SHARE: _binary("1 = shared", _POS),
    Signal.COMMENT: _binary("1 = commented", _POS),
    Signal.BOOKMARK: _binary("1 = saved, 0 = removed", _POS, Aggregate.LATEST),
    Signal.PURCHASE: SignalSpec(
        "currency units", 0.0, 1e6, _POS, Aggregate.SUM, Transform("log1p", scale=PURCHASE_FULL_VALUE)
    ),
    Signal.SKIP: _binary("1 = skipped", _NEG, weight=-1.0),
    Signal.HIDE: _binary("1 = hidden", _NEG, weight=-1.0),
    Signal.REPORT: _binary("1 = reported", _NEG, weight=-1.0),
    Signal.SESSION_END: _binary("1 = session ended", Polarity.NEUTRAL, weight=0.0),
}

BY_KEY: dict[str, Signal] = {signal.key: signal for signal in Signal}


def parse_signal(number: int) -> Signal:
    """The signal with proto number ``number``; ValueError naming the field otherwise."""
    try:
        return Signal(number)
    except ValueError:
        raise ValueError(f"signal must be one of {min(Signal)}..{max(Signal)}, got {number}") from None


def check_value(signal: Signal, value: float) -> str | None:
    """Why ``value`` is invalid for ``signal``, or None when it is valid."""
    spec = SIGNALS[signal]
    if not math.isfinite(value):
        return f"{signal.key} value must be finite, got {value}"
    if not spec.low <= value <= spec.high or (spec.integral and not float(value).is_integer()):
        return f"{signal.key} value must be {spec.expected}, got {value}"
    return None


@dataclass(frozen=True)
class Event:
    """One feedback event about one decision-item, as the reward engine sees it.

    ``event_id`` is the caller's idempotency key; ``occurred_at_ms`` is when the user acted (caller's
    clock, Unix ms), ``received_at_ms`` when rewardloop recorded it (server clock, Unix ms). Values are
    not checked here: ``quality.assess`` decides whether an event may train.
    """

    event_id: str
    signal: Signal
    value: float
    occurred_at_ms: int
    received_at_ms: int

    def same_fact(self, other: Event) -> bool:
        """Whether ``other`` reports the same thing (a retry may differ in ``received_at_ms`` only)."""
        return (self.event_id, self.signal, self.value, self.occurred_at_ms) == (
            other.event_id,
            other.signal,
            other.value,
            other.occurred_at_ms,
        )
