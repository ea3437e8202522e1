"""Real-time user features: sliding-window activity, session, recency of a positive, category affinity.

A :class:`RealtimeFeatures` config (frozen, validated) owns no user data: each user's activity is
a :class:`UserActivity` the caller keeps (the shard actor) and stores as bytes next to the user's
policy states. ``observe`` folds one event in; ``vector`` computes the features at a query time
``now_ms`` the caller passes (no wall clock here, no RNG, no I/O).

**What the state is.** The retained events, each packed into one int64 *key* and kept sorted by
it, plus the time of the latest positive feedback ever seen. A key is::

    occurred_at_ms << 18 | category index << 2 | is_feedback << 1 | positive

(category index 0 = none or undeclared, k + 1 = ``categories[k]``), so sorting by key sorts by
time, and the order is total over everything an event contributes to the features. Retained are
the ``max_events`` largest keys among the events with ``occurred_at_ms > latest - horizon_ms``,
where ``latest`` is the largest occurrence time seen and ``horizon_ms`` the longest window. Both
rules only ever drop the smallest keys, so the state is a function of the *set* of events
observed, whatever order they came in: feedback may arrive late or out of order, a snapshot
plus a replay of the rest of the log gives bit for bit the state (and vectors) of an
uninterrupted run. Observing the same event twice counts it twice: dropping duplicates (by
event id, or by log position as ``state.snapshots.replay`` does) is the caller's job. ``reward`` and
``item_id`` are not retained; ``item_id`` only resolves the category when the event has none.

**Features** (``names`` gives them in this order; ``W`` is the longest window; "in w" means
``now_ms - w < occurred_at_ms <= now_ms``, half-open, so an event at exactly ``now_ms - w`` is
out, one a millisecond later is in, and events after ``now_ms`` are ignored everywhere):

- ``decisions_<w>``, ``feedback_<w>`` for each window ``w``: how many decision and feedback
  events in ``w`` (raw counts; scaling belongs to the surface's feature pipeline);
- ``positive_rate_<W>``: ``(positives + 1) / (feedback + 2)`` over feedback in ``W``, the mean
  of a Beta(1, 1) posterior: 0.5 with no evidence, never exactly 0 or 1;
- ``since_positive``: ``log1p(min(s, cap)) / log1p(cap)`` with ``s`` the seconds from the latest
  positive feedback at or before ``now_ms`` to ``now_ms`` and ``cap`` = ``recency_cap_ms`` in
  seconds: 0.0 for a positive right now, 1.0 at or beyond the cap or with no positive ever;
- ``session_events``, ``session_seconds``: the current session, the run of events at or before
  ``now_ms`` that ends with the latest of them, where a pause of ``session_gap_ms`` or more
  between two events starts a new session; it is current while ``now_ms - last event <
  session_gap_ms`` (0 and 0.0 otherwise). Seconds run from its first event to its last;
- ``affinity:<category>`` for each declared category: its share of the positives in ``W``
  (0.0 each with no positives; positives without a declared category take the remainder).

Features are exact for ``now_ms`` at or after the latest event observed, the way a server
queries them. Sessions are seen through the retained events, so one longer than the horizon
(or than ``max_events`` events) is measured from the oldest retained event. Earlier ``now_ms``
(replaying history) see only what is still retained.

State bytes (little-endian, never pickled; the same state always gives the same bytes)::

    b"RLRT" | u16 format version | 8-byte config fingerprint | i64 latest positive ms (-1: none)
    | u32 event count | event keys as i64 | u32 CRC-32 of everything before it

The fingerprint covers what shaped the state (``horizon_ms``, ``max_events``, ``categories``);
loading under a config that differs there raises ValueError: rebuild the state from the log
(the last ``horizon_ms`` of it suffices, plus the latest positive for ``since_positive``). A
changed ``item_categories`` applies to events observed after the change.

>>> features = RealtimeFeatures(windows_ms=(HOUR_MS, DAY_MS), categories=("news", "sport"))
>>> activity = features.new_state()
>>> features.observe(activity, ActivityEvent(1_000_000, "decision", item_id="a1"))
>>> features.observe(activity, ActivityEvent(1_060_000, "feedback", True, 1.0, "a1", "news"))
>>> dict(zip(features.names, features.vector(activity, now_ms=1_120_000).round(3).tolist()))
... # doctest: +NORMALIZE_WHITESPACE
{'decisions_1h': 1.0, 'feedback_1h': 1.0, 'decisions_24h': 1.0, 'feedback_24h': 1.0,
 'positive_rate_24h': 0.667, 'since_positive': 0.309, 'session_events': 2.0,
 'session_seconds': 60.0, 'affinity:news': 1.0, 'affinity:sport': 0.0}
>>> features.load(features.dump(activity)) == activity
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from functools import cached_property
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from rewardloop.learning.params import ConfigError, int_in_range

__all__ = ["DAY_MS", "HOUR_MS", "MINUTE_MS", "ActivityEvent", "RealtimeFeatures", "UserActivity"]

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

MAGIC = b"RLRT"
FORMAT_VERSION = 1
# Occurrence times are milliseconds in [0, 2**44) (until the year 2527), so a key fits an int64.
TIME_LIMIT_MS = 1 << 44
MAX_SPAN_MS = 1 << 40  # windows, session gap and recency cap: up to ~35 years
MAX_CATEGORIES = (1 << 16) - 1
NO_POSITIVE = -1

_TIME_SHIFT = 18
_CATEGORY_SHIFT = 2
_CATEGORY_MASK = (1 << 16) - 1
_FEEDBACK = 0b10
_POSITIVE = 0b01
_HEADER = struct.Struct("<4sH8sqI")
_CRC = struct.Struct("<I")

KeyArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class ActivityEvent(NamedTuple):
    """One decision shown to the user or one feedback event from them; a plain tuple works too."""

    occurred_at_ms: int
    kind: Literal["decision", "feedback"]
    positive: bool = False  # feedback only: the signal counts as positive (click, like, completion...)
    reward: float = 0.0
    item_id: str = ""
    category: str | None = None  # None: looked up in RealtimeFeatures.item_categories


# The keys of a user without events, shared (read-only: ``observe`` replaces a user's keys).
_NO_KEYS = np.empty(0, dtype=np.int64)
_NO_KEYS.flags.writeable = False


@dataclasses.dataclass(eq=False, slots=True)
class UserActivity:
    """One user's retained events (sorted packed keys) and latest positive time; ``==`` is bitwise."""

    keys: KeyArray = dataclasses.field(default_factory=lambda: _NO_KEYS)
    last_positive_ms: int = NO_POSITIVE

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserActivity):
            return NotImplemented
        return self.last_positive_ms == other.last_positive_ms and self.keys.tobytes() == other.keys.tobytes()

    def copy(self) -> UserActivity:
        return UserActivity(self.keys.copy(), self.last_positive_ms)

    @property
    def n_events(self) -> int:
        return len(self.keys)

    @property
    def latest_ms(self) -> int | None:
        """Occurrence time of the latest event seen, None before any."""
        return int(self.keys[-1]) >> _TIME_SHIFT if len(self.keys) else None


def _span_name(ms: int) -> str:
    for unit, size in (("d", DAY_MS), ("h", HOUR_MS), ("m", MINUTE_MS), ("s", 1000)):
        # 24 h reads better as "24h" than "1d"; days only past two of them
        if ms % size == 0 and (unit != "d" or ms > 2 * DAY_MS):
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _windows(value: object) -> tuple[int, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise ConfigError(f"windows_ms must be a non-empty sequence of window lengths in ms, got {value!r}")
    windows = tuple(int_in_range(f"windows_ms[{i}]", w, 1, MAX_SPAN_MS) for i, w in enumerate(value))
    if any(a >= b for a, b in itertools.pairwise(windows)):
        raise ConfigError(f"windows_ms must be strictly increasing, got {list(windows)}")
    return windows


def _categories(value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ConfigError(f"categories must be a sequence of category names, got {value!r}")
    if len(value) > MAX_CATEGORIES:
        raise ConfigError(f"categories must have at most {MAX_CATEGORIES} names, got {len(value)}")
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"categories[{i}] must be a non-empty string, got {name!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"categories must be distinct, got {list(value)}")
    return tuple(value)


def _item_categories(value: object, categories: tuple[str, ...]) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"item_categories must be a mapping of item id to category, got {value!r}")
    declared = set(categories)
    for item, category in value.items():
        if not isinstance(item, str):
            raise ConfigError(f"item_categories keys must be item ids (strings), got {item!r}")
        if category not in declared:
            raise ConfigError(f"item_categories[{item!r}] is {category!r}, which is not one of categories")
    return MappingProxyType(dict(value))


@dataclasses.dataclass(frozen=True)
class RealtimeFeatures:
    """Hyper-parameters of the real-time features; the methods work on a caller-owned ``UserActivity``."""

    windows_ms: tuple[int, ...] = (HOUR_MS, DAY_MS)
    """Window lengths in ms, strictly increasing; the longest is the retention horizon."""
    session_gap_ms: int = 30 * MINUTE_MS
    """A pause this long or longer between two events starts a new session."""
    recency_cap_ms: int = 7 * DAY_MS
    """``since_positive`` saturates at 1.0 from this age of the latest positive on."""
    max_events: int = 2048
    """At most this many events are retained (the oldest go first)."""
    categories: tuple[str, ...] = ()
    """Declared categories, one ``affinity:<name>`` feature each, in this order."""
    item_categories: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)
    """Category of an item, for events that carry none; values must be declared ``categories``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "windows_ms", _windows(self.windows_ms))
        object.__setattr__(self, "session_gap_ms", int_in_range("session_gap_ms", self.session_gap_ms, 1, MAX_SPAN_MS))
        object.__setattr__(self, "recency_cap_ms", int_in_range("recency_cap_ms", self.recency_cap_ms, 1, MAX_SPAN_MS))
        object.__setattr__(self, "max_events", int_in_range("max_events", self.max_events, 1, 1_000_000))
        object.__setattr__(self, "categories", _categories(self.categories))
        object.__setattr__(self, "item_categories", _item_categories(self.item_categories, self.categories))

    @property
    def horizon_ms(self) -> int:
        return self.windows_ms[-1]

    @cached_property
    def names(self) -> tuple[str, ...]:
        longest = _span_name(self.horizon_ms)
        counts = [f"{kind}_{_span_name(w)}" for w in self.windows_ms for kind in ("decisions", "feedback")]
        affinity = [f"affinity:{c}" for c in self.categories]
        return (*counts, f"positive_rate_{longest}", "since_positive", "session_events", "session_seconds", *affinity)

    @property
    def dim(self) -> int:
        return len(self.names)

    @cached_property
    def fingerprint(self) -> bytes:
        """8 bytes identifying what shapes a state (see the module docstring)."""
        shape = {"horizon_ms": self.horizon_ms, "max_events": self.max_events, "categories": list(self.categories)}
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).digest()[:8]

    @cached_property
    def _category_index(self) -> dict[str, int]:
        return {name: k + 1 for k, name in enumerate(self.categories)}

    def new_state(self) -> UserActivity:
        return UserActivity()

    # --- updating -----------------------------------------------------------------------

    def observe(self, state: UserActivity, event: ActivityEvent | tuple[Any, ...]) -> None:
        """Fold one event into ``state`` (in place); ValueError naming the field for a bad event."""
        key = self._key(event)
        t = key >> _TIME_SHIFT
        if key & _POSITIVE:
            state.last_positive_ms = max(state.last_positive_ms, t)
        keys = state.keys
        latest = max(t, int(keys[-1]) >> _TIME_SHIFT) if len(keys) else t
        cutoff = (latest - self.horizon_ms + 1) << _TIME_SHIFT
        if key < cutoff:  # older than the horizon already: nothing else moves either
            return
        first = int(np.searchsorted(keys, cutoff))
        at = int(np.searchsorted(keys, key, side="right"))
        keys = np.concatenate((keys[first:at], np.array([key], dtype=np.int64), keys[at:]))
        state.keys = keys[len(keys) - self.max_events :] if len(keys) > self.max_events else keys

    def _key(self, event: ActivityEvent | tuple[Any, ...]) -> int:
        t, kind, positive, reward, item_id, category = event
        if isinstance(t, bool) or not isinstance(t, int | np.integer) or not 0 <= t < TIME_LIMIT_MS:
            raise ValueError(f"event.occurred_at_ms must be an integer in [0, 2**44), got {t!r}")
        if not isinstance(positive, bool | np.bool_):
            raise ValueError(f"event.positive must be a bool, got {positive!r}")
        if kind == "feedback":
            flags = _FEEDBACK | (_POSITIVE if positive else 0)
        elif kind == "decision" and not positive:
            flags = 0
        else:
            problem = "a decision cannot be positive" if kind == "decision" else "must be 'decision' or 'feedback'"
            raise ValueError(f"event.kind {kind!r}: {problem}")
        if isinstance(reward, bool) or not isinstance(reward, int | float | np.integer | np.floating):
            raise ValueError(f"event.reward must be a real number, got {reward!r}")
        if not math.isfinite(reward):
            raise ValueError(f"event.reward must be finite, got {reward!r}")
        if not isinstance(item_id, str) or not (category is None or isinstance(category, str)):
            raise ValueError(f"event.item_id must be a string and event.category a string or None, got {event!r}")
        name = self.item_categories.get(item_id) if category is None else category
        index = self._category_index.get(name, 0) if name is not None else 0
        return int(t) << _TIME_SHIFT | index << _CATEGORY_SHIFT | flags

    # --- features -----------------------------------------------------------------------

    def vector(self, state: UserActivity, now_ms: int) -> FloatArray:
        """The features at ``now_ms`` in ``names`` order (float64); ``state`` is not modified."""
        if isinstance(now_ms, bool) or not isinstance(now_ms, int | np.integer) or not 0 <= now_ms < TIME_LIMIT_MS:
            raise ValueError(f"now_ms must be an integer in [0, 2**44), got {now_ms!r}")
        now = int(now_ms)
        keys = state.keys
        end = int(np.searchsorted(keys, (now + 1) << _TIME_SHIFT))  # keys[:end] happened at or before now
        bounds = [max(now - w + 1, 0) << _TIME_SHIFT for w in self.windows_ms]
        starts = np.searchsorted(keys[:end], bounds).tolist()
        longest = keys[starts[-1] : end]
        is_feedback = (longest & _FEEDBACK) != 0
        positives = longest[(longest & _POSITIVE) != 0]
        out = np.empty(self.dim)
        for i, start in enumerate(starts):
            feedback = int(np.count_nonzero(is_feedback[start - starts[-1] :]))
            out[2 * i], out[2 * i + 1] = end - start - feedback, feedback
        i = 2 * len(starts)
        out[i] = (len(positives) + 1.0) / (int(np.count_nonzero(is_feedback)) + 2.0)
        out[i + 1] = self._since_positive(state, keys[:end], now)
        out[i + 2], out[i + 3] = self._session(keys[:end], now)
        if self.categories:
            out[i + 4 :] = self._affinity(positives)
        return out

    def _since_positive(self, state: UserActivity, past: KeyArray, now: int) -> float:
        if state.last_positive_ms != NO_POSITIVE and state.last_positive_ms <= now:
            at = state.last_positive_ms
        else:  # querying the past: the latest positive at or before now, as far as it is retained
            retained = np.flatnonzero(past & _POSITIVE)
            if not len(retained):
                return 1.0
            at = int(past[retained[-1]]) >> _TIME_SHIFT
        cap = self.recency_cap_ms / 1000.0
        return math.log1p(min((now - at) / 1000.0, cap)) / math.log1p(cap)

    def _session(self, past: KeyArray, now: int) -> tuple[int, float]:
        if not len(past) or now - (int(past[-1]) >> _TIME_SHIFT) >= self.session_gap_ms:
            return 0, 0.0
        times = past >> _TIME_SHIFT
        breaks = np.flatnonzero(np.diff(times) >= self.session_gap_ms)
        start = int(breaks[-1]) + 1 if len(breaks) else 0
        return len(times) - start, (int(times[-1]) - int(times[start])) / 1000.0

    def _affinity(self, positives: KeyArray) -> FloatArray:
        if not len(positives):
            return np.zeros(len(self.categories))
        index = (positives >> _CATEGORY_SHIFT) & _CATEGORY_MASK
        counts = np.bincount(index, minlength=len(self.categories) + 1)[1:]
        return counts / float(len(positives))

    # --- bytes --------------------------------------------------------------------------

    def dump(self, state: UserActivity) -> bytes:
        """``state`` as versioned bytes (format in the module docstring)."""
        keys = np.ascontiguousarray(state.keys, dtype="<i8")
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, self.fingerprint, state.last_positive_ms, len(keys))
        body = header + keys.tobytes()
        return body + _CRC.pack(zlib.crc32(body))

    def load(self, blob: bytes | bytearray | memoryview) -> UserActivity:
        """The state ``dump`` wrote under this config; ValueError for anything else."""
        data = bytes(blob)
        if len(data) < _HEADER.size + _CRC.size:
            raise ValueError(f"corrupt realtime state: {len(data)} bytes, shorter than header and checksum")
        magic, version, fingerprint, last_positive, n = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ValueError(f"not a realtime state: magic {magic!r}, expected {MAGIC!r}")
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported realtime state format version {version}, expected {FORMAT_VERSION}")
        if _CRC.unpack_from(data, len(data) - _CRC.size)[0] != zlib.crc32(data[: -_CRC.size]):
            raise ValueError("corrupt realtime state: checksum mismatch (truncated or damaged)")
        if len(data) != _HEADER.size + 8 * n + _CRC.size:
            raise ValueError(f"corrupt realtime state: {len(data)} bytes for {n} events")
        if fingerprint != self.fingerprint:
            raise ValueError(
                "realtime state was built under another horizon_ms, max_events or categories "
                f"(fingerprint {fingerprint.hex()}, this config {self.fingerprint.hex()}); rebuild it from the log"
            )
        keys = np.frombuffer(data, dtype="<i8", count=n, offset=_HEADER.size).astype(np.int64)
        state = UserActivity(keys, last_positive)
        self._check_values(state)
        return state

    def _check_values(self, state: UserActivity) -> None:
        """Reject loaded states that no sequence of ``observe`` calls could have produced."""
        keys, last_positive = state.keys, state.last_positive_ms
        problem = None
        if len(keys) > self.max_events:
            problem = f"{len(keys)} events, more than max_events={self.max_events}"
        elif len(keys) and (keys[0] < 0 or keys[-1] >= TIME_LIMIT_MS << _TIME_SHIFT or np.any(np.diff(keys) < 0)):
            problem = "event keys out of range or not sorted"
        elif np.any((keys & (_FEEDBACK | _POSITIVE)) == _POSITIVE):
            problem = "a positive event that is not feedback"
        elif np.any(((keys >> _CATEGORY_SHIFT) & _CATEGORY_MASK) > len(self.categories)):
            problem = "an event with an undeclared category index"
        elif len(keys) and keys[0] < (int(keys[-1] >> _TIME_SHIFT) - self.horizon_ms + 1) << _TIME_SHIFT:
            problem = "an event older than the horizon"
        elif not (last_positive == NO_POSITIVE or 0 <= last_positive < TIME_LIMIT_MS):
            problem = f"latest positive at {last_positive} ms"
        elif np.any(keys & _POSITIVE) and last_positive < int(
            keys[np.flatnonzero(keys & _POSITIVE)[-1]] >> _TIME_SHIFT
        ):
            problem = "a retained positive later than the latest positive"
        if problem:
            raise ValueError(f"corrupt realtime state: {problem}")
