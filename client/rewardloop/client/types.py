"""Typed values the SDK takes and returns, independent of the generated protobuf classes."""

from __future__ import annotations

import enum
import uuid
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime

import grpc

from rewardloop.client._checks import require_number, require_str
from rewardloop.client.errors import FieldViolation, RewardloopError, error_for
from rewardloop.v1 import feedback_pb2

_PROTO_PREFIX = "SIGNAL_"


class Signal(enum.Enum):
    """Kind of feedback; the value's unit and range depend on it (see feedback.proto).

    Members mirror `rewardloop.v1.Signal` without its prefix and take their numbers from it, so a
    renamed or removed proto value fails at import; a test checks that no proto value is missing.

    >>> Signal.parse("click") is Signal.CLICK
    True
    """

    CLICK = feedback_pb2.SIGNAL_CLICK
    """value: 1 = clicked, 0 = shown and not clicked."""
    DWELL = feedback_pb2.SIGNAL_DWELL
    """value: seconds on the item, 0..86400."""
    RATING = feedback_pb2.SIGNAL_RATING
    """value: stars, 1..5 (fractions allowed)."""
    LIKE = feedback_pb2.SIGNAL_LIKE
    """value: 1 = like, 0 = explicit un-like."""
    IMPRESSION = feedback_pb2.SIGNAL_IMPRESSION
    """value: 1 = shown. Weight 0 by default: recorded, never moves the reward alone."""
    COMPLETION = feedback_pb2.SIGNAL_COMPLETION
    """value: fraction of the item consumed, 0..1."""
    DISLIKE = feedback_pb2.SIGNAL_DISLIKE
    """value: 1 = disliked, 0 = dislike withdrawn (a negative signal)."""
    SHARE = feedback_pb2.SIGNAL_SHARE
    """value: 1 = shared."""
    COMMENT = feedback_pb2.SIGNAL_COMMENT
    """value: 1 = commented."""
    BOOKMARK = feedback_pb2.SIGNAL_BOOKMARK
    """value: 1 = saved, 0 = bookmark removed."""
    PURCHASE = feedback_pb2.SIGNAL_PURCHASE
    """value: amount in the surface's currency units, 0..1000000."""
    SKIP = feedback_pb2.SIGNAL_SKIP
    """value: 1 = skipped (a negative signal)."""
    HIDE = feedback_pb2.SIGNAL_HIDE
    """value: 1 = hidden, "not interested" (a negative signal)."""
    REPORT = feedback_pb2.SIGNAL_REPORT
    """value: 1 = reported as abuse or spam (a negative signal)."""
    SESSION_END = feedback_pb2.SIGNAL_SESSION_END
    """value: 1 = the user ended the agent session after this decision. Weight 0 by default: never
    moves the reward; on an agent surface it makes the decision the session's last step."""

    @classmethod
    def parse(cls, signal: Signal | str) -> Signal:
        """A `Signal`, or its name in any case ("click", "DWELL")."""
        if isinstance(signal, Signal):
            return signal
        if not isinstance(signal, str):
            raise TypeError(f"signal must be a Signal or its name, got {type(signal).__name__}")
        name = signal.upper().removeprefix(_PROTO_PREFIX)
        try:
            return cls[name]
        except KeyError:
            names = ", ".join(member.name.lower() for member in cls)
            raise ValueError(f"unknown signal {signal!r}; expected one of: {names}") from None


def new_event_id() -> str:
    """A fresh idempotency key: 32 hex characters of a random UUID."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One thing a user did, for `record_batch`; the fields are those of `record`.

    `event_id` is drawn when the event is created, so sending the same `FeedbackEvent` again
    (after a timeout, say) is counted once by the service.
    """

    user_id: str
    item_id: str
    signal: Signal | str
    value: float = 1.0
    _: KW_ONLY
    decision_id: str | None = None
    surface: str | None = None
    event_id: str = field(default_factory=new_event_id)
    occurred_at: datetime | None = None

    def __post_init__(self) -> None:
        # Validate here rather than at send time: a bad event fails where it was built.
        for name in ("user_id", "item_id", "event_id"):
            require_str(name, getattr(self, name))
        for name in ("decision_id", "surface"):
            require_str(name, getattr(self, name), optional=True)
        require_number("value", self.value)
        object.__setattr__(self, "signal", Signal.parse(self.signal))
        if self.occurred_at is not None:
            if not isinstance(self.occurred_at, datetime):
                raise TypeError(f"occurred_at must be a datetime, got {type(self.occurred_at).__name__}")
            if self.occurred_at.utcoffset() is None:
                # protobuf would read a naive datetime as UTC, Python as local time: refuse to guess.
                raise ValueError("occurred_at must be timezone-aware, e.g. datetime.now(timezone.utc)")


@dataclass(frozen=True, slots=True)
class RecommendedItem:
    """One chosen item (or agent action)."""

    item_id: str
    score: float
    """The policy's score at decision time; comparable only within one response."""
    propensity: float
    """Probability in (0, 1] that the policy would have put this item in this slot."""
    slot: int
    """0-based position in the returned list."""


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The answer to `recommend`. Send `decision_id` back with the feedback about these items."""

    decision_id: str
    items: tuple[RecommendedItem, ...]
    policy: str
    """Algorithm that decided, e.g. "ucb1"."""
    model_version: str
    """Opaque version of the model that decided; compare for equality only."""
    assignments: dict[str, str]
    """Experiment → variant, for experiments covering this surface."""

    @property
    def item_ids(self) -> tuple[str, ...]:
        return tuple(item.item_id for item in self.items)


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    """Outcome of one feedback event.

    From `record_batch`, a rejected event is a result with `ok` False (not an exception):
    `code` and `message` say why, and `error` gives the matching SDK exception to raise or log.
    """

    event_id: str
    duplicate: bool
    """True when this event_id had already been recorded; it was not applied again."""
    reward: float
    """The fused reward of the event's decision-item after it, in [0, 1]; 0 when rejected or flagged."""
    code: grpc.StatusCode = grpc.StatusCode.OK
    message: str = ""
    flag: str = ""
    """Empty when the event trains the model; otherwise it was recorded but trains nothing, and
    this says why (e.g. "burst: ...", "decision_id: unknown decision for this user")."""
    field: str = ""
    """For a rejected event with bad input: the field at fault, e.g. "events[3].value"."""

    @property
    def ok(self) -> bool:
        return self.code is grpc.StatusCode.OK

    @property
    def error(self) -> RewardloopError | None:
        if self.ok:
            return None
        violations = [FieldViolation(self.field, self.message.removeprefix(f"{self.field}: "))] if self.field else []
        return error_for(self.code, self.message, violations)
