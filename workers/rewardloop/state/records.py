"""The two logs' record types, each with its one codec: nothing else parses their fields.

- :class:`FeedbackRecord`: one entry of a user's feedback log (``rl:{p}:fb``), a caller's
  event or the service's window close. ``fields()`` is the stream encoding (flat field/value
  pairs, as the append script takes them); ``from_fields`` reads it back, including entries
  written before the later fields existed.
- :class:`DecisionRecord`: one decision, as the decision log (``rl:{p}:dec``, field ``j``) and
  the join index (``rl:{p}:join``) keep it; ``to_json``/``from_json`` are its codec.

These bytes outlive every process (tests/unit/test_layout_golden.py pins them).

>>> r = FeedbackRecord("p", "e1", "home", "i1", 1.0, occurred_at_ms=5)
>>> f = r.fields()
>>> raw = {str(k).encode(): v if isinstance(v, bytes) else v.encode() for k, v in zip(f[::2], f[1::2])}
>>> back = FeedbackRecord.from_fields("p", "7-0", raw)
>>> back == r.appended("7-0"), back.received_at_ms
(True, 7)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rewardloop.learning.rewards import Event, Signal

# Feedback-log field "k" of a window-close entry.
WINDOW_CLOSE = "close"
# A window close's event id names its decision: one entry closes every item of it that needs closing.
WINDOW_CLOSE_ID = "window-close:{}"
# The stream id before every entry: a state that has seen none of the log is at it.
LOG_START = "0-0"


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """Redis stream ids ("<ms>-<seq>") as comparable tuples."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class FeedbackRecord:
    """One entry of a user's feedback log: an accepted event, or the service's window close."""

    pseudonym: str
    event_id: str
    surface: str
    item_id: str
    # The event's own reward (its signal alone under the surface's rules): what an event
    # without a decision trains with.
    reward: float
    signal: int = int(Signal.CLICK)
    value: float = 0.0
    occurred_at_ms: int = 0
    decision_id: str = ""
    # The decision's feature vector (float64 bytes; empty for context-free surfaces or
    # feedback that could not be joined to its decision), the item's propensity, segment.
    features: bytes = b""
    propensity: float = 0.0
    segment: str = ""
    # When the joined decision was made (0: not joined), and the quality flag (empty: trains).
    decided_at_ms: int = 0
    flag: str = ""
    # Not the caller's: the service's record that the decision's window closed with no reward for
    # the items in ``closes`` (learning/rewards/ledger.py); it teaches them the default reward.
    window_close: bool = False
    # A window close's items and their propensities (``item_id`` is then ""). Entries written
    # before closed one item each, ``item_id`` (``closing``).
    closes: tuple[tuple[str, float], ...] = ()
    # The entry's feedback-log id once appended; "" before.
    stream_id: str = ""
    # The policy state its decision was made with (``DecisionRecord.policy_key``); "": the surface's.
    policy_key: str = ""

    @property
    def state_key(self) -> str:
        """The key of the policy state the entry trains (``UserState.policies``)."""
        return self.policy_key or self.surface

    def fields(self) -> list[str | bytes]:
        """The stream encoding: flat field/value pairs (``k`` only on a window close, ``c`` on one
        that lists its items)."""
        fields: list[str | bytes] = [
            "e", self.event_id, "s", self.surface, "i", self.item_id, "r", repr(self.reward),
            "g", str(self.signal), "v", repr(self.value), "t", str(self.occurred_at_ms),
            "d", self.decision_id, "x", self.features, "p", repr(self.propensity), "sg", self.segment,
            "dt", str(self.decided_at_ms), "q", self.flag,
        ]  # fmt: skip
        if self.closes:
            fields += ["c", json.dumps([list(c) for c in self.closes], separators=(",", ":"))]
        if self.policy_key:
            fields += ["pk", self.policy_key]
        return [*fields, "k", WINDOW_CLOSE] if self.window_close else fields

    @classmethod
    def from_fields(cls, pseudonym: str, stream_id: str, f: Mapping[bytes, bytes]) -> FeedbackRecord:
        """The entry ``fields()`` wrote at ``stream_id`` (fields added later default when absent)."""
        return cls(
            pseudonym=pseudonym,
            event_id=f[b"e"].decode(),
            surface=f[b"s"].decode(),
            item_id=f[b"i"].decode(),
            reward=float(f[b"r"]),
            signal=int(f[b"g"]),
            value=float(f[b"v"]),
            occurred_at_ms=int(f[b"t"]),
            decision_id=f.get(b"d", b"").decode(),
            features=f.get(b"x", b""),
            propensity=float(f.get(b"p", b"0")),
            segment=f.get(b"sg", b"").decode(),
            decided_at_ms=int(f.get(b"dt", b"0")),
            flag=f.get(b"q", b"").decode(),
            window_close=f.get(b"k") == WINDOW_CLOSE.encode(),
            closes=tuple((str(item), float(p)) for item, p in json.loads(f[b"c"])) if b"c" in f else (),
            stream_id=stream_id,
            policy_key=f.get(b"pk", b"").decode(),
        )

    def appended(self, stream_id: str) -> FeedbackRecord:
        """The record as the log holds it, at ``stream_id``."""
        return dataclasses.replace(self, stream_id=stream_id)

    def context(self) -> npt.NDArray[np.float64] | None:
        return np.frombuffer(self.features, dtype="<f8") if self.features else None

    def closing(self) -> tuple[tuple[str, float], ...]:
        """A window close's items and propensities (one item for an entry written before lists)."""
        return self.closes or ((self.item_id, self.propensity),)

    @property
    def user_action(self) -> bool:
        """An event of the user's that the ingest accepted (not flagged, not a window close)."""
        return not (self.flag or self.window_close)

    @property
    def positive(self) -> bool:
        """A user action whose own reward is > 0: what real-time features call positive."""
        return self.user_action and self.reward > 0.0

    @property
    def received_at_ms(self) -> int:
        """Server time the entry was logged: the log's own clock, the same in every replay."""
        return stream_id_key(self.stream_id)[0]

    def event(self, received_at_ms: int | None = None) -> Event:
        """The entry as reward fusion sees it; ``received_at_ms`` for a record not appended yet."""
        received = self.received_at_ms if received_at_ms is None else received_at_ms
        return Event(self.event_id, Signal(self.signal), self.value, self.occurred_at_ms, received)


@dataclass(frozen=True)
class DecisionRecord:
    """One decision: what the decision log keeps, and what a feedback join or a window close needs."""

    pseudonym: str
    decision_id: str
    surface: str
    items: tuple[str, ...]
    propensities: tuple[float, ...]
    policy: str
    model_version: str
    decided_at_ms: int
    features: tuple[float, ...] = ()
    segment: str = ""
    # When the decision's reward window closes (Unix ms); 0: unknown (records before windows).
    closes_at_ms: int = 0
    # The user's policy state that decided, when not the surface's own: a policy experiment
    # variant's (``learning/experiments/policies.policy_key``); feedback joined to the decision trains it.
    policy_key: str = ""

    @property
    def state_key(self) -> str:
        return self.policy_key or self.surface

    def feature_bytes(self) -> bytes:
        """The feature vector as the feedback log stores it (float64, little-endian)."""
        return np.asarray(self.features, dtype="<f8").tobytes()

    def propensity_of(self, item_id: str) -> float:
        """The propensity of one of the decision's items."""
        return self.propensities[self.items.index(item_id)]

    def to_json(self, keyed: bool = False) -> str:
        """The record as JSON; ``keyed``: without its decision id, for a place that keys it by that id
        (the join index). Empty features and segment are left out."""
        record = {
            "d": self.decision_id, "s": self.surface, "i": self.items, "p": self.propensities,
            "a": self.policy, "v": self.model_version, "t": self.decided_at_ms, "x": self.features,
            "sg": self.segment, "w": self.closes_at_ms,
        }  # fmt: skip
        for key in ("d",) if keyed else ():
            del record[key]
        if self.policy_key:
            record["k"] = self.policy_key
        for key in ("x", "sg"):
            if not record[key]:
                del record[key]
        return json.dumps(record, separators=(",", ":"))

    @classmethod
    def from_json(cls, pseudonym: str, raw: str | bytes, decision_id: str = "") -> DecisionRecord:
        """The record `to_json` wrote (the pseudonym lives in the key, not the record; so does the
        decision id of a ``keyed`` record)."""
        d = json.loads(raw)
        return cls(
            pseudonym=pseudonym,
            decision_id=d.get("d", decision_id),
            surface=d["s"],
            items=tuple(d["i"]),
            propensities=tuple(d["p"]),
            policy=d["a"],
            model_version=d["v"],
            decided_at_ms=int(d["t"]),
            features=tuple(d.get("x", ())),
            segment=d.get("sg", ""),
            closes_at_ms=int(d.get("w", 0)),
            policy_key=d.get("k", ""),
        )
