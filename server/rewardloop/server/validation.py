"""Request validation: proto messages in, shard calls out, or an error naming the field.

Pure functions (no I/O), table-tested in tests/unit/test_validation.py.
"""

from __future__ import annotations

import math
import time

from rewardloop.learning.features.schema import FeatureError
from rewardloop.learning.params import NAME_PATTERN
from rewardloop.learning.rewards import Signal, check_value
from rewardloop.learning.surface import SurfaceConfig
from rewardloop.server.status import ServiceError, invalid, not_found, quote
from rewardloop.state.keys import pseudonymize
from rewardloop.v1 import feedback_pb2, recommender_pb2
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.messages import FeedbackCall, RecommendCall

MAX_USER_ID_BYTES = 256
MAX_N = 100
MAX_CANDIDATES = 1000
MAX_CONTEXT_ENTRIES = 256
MAX_CATEGORICAL_BYTES = 256
MAX_EVENT_ID_BYTES = 128
# Item ids in a catalogue are 1..256 bytes (config); decision ids are ours (32 hex digits).
MAX_ITEM_ID_BYTES = 256
MAX_DECISION_ID_BYTES = 64
MAX_BATCH_EVENTS = 1000
# Client clocks drift; more than this ahead of ours is a bug or a forgery.
MAX_FUTURE_SKEW_MS = 5 * 60 * 1000
# google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799


def check_user_id(user_id: str, field: str = "user_id") -> None:
    size = len(user_id.encode())
    if size == 0:
        raise invalid(field, "must not be empty")
    if size > MAX_USER_ID_BYTES:
        raise invalid(field, f"must be at most {MAX_USER_ID_BYTES} bytes, got {size}")


def surface_named(config: ServiceConfig, name: str, field: str = "surface") -> SurfaceConfig:
    if not name:
        raise invalid(field, "must not be empty")
    surface = config.surfaces.get(name)
    if surface is None:
        raise not_found(f"{field}: surface {quote(name)} is not configured")
    return surface


def recommend_call(
    req: recommender_pb2.RecommendRequest, config: ServiceConfig
) -> tuple[RecommendCall, dict[str, float | str]]:
    """The shard's call, and the request's validated context (experiment targeting reads it)."""
    check_user_id(req.user_id)
    surface = surface_named(config, req.surface)
    candidates = tuple(req.candidates)
    if len(candidates) > MAX_CANDIDATES:
        raise invalid("candidates", f"must have at most {MAX_CANDIDATES} items, got {len(candidates)}")
    for item in candidates:
        if item not in surface.index:
            raise invalid("candidates", f"item {quote(item)} is not in surface {surface.name!r}")
    if len(set(candidates)) != len(candidates):
        raise invalid("candidates", "must not contain duplicates")
    available = len(candidates) or len(surface.items)
    n = req.n or 1
    if n > MAX_N:
        raise invalid("n", f"must be in [1, {MAX_N}], got {n}")
    if n > available:
        raise invalid("n", f"must be at most the number of candidates ({available}), got {n}")
    context = context_features(req.context)
    features: tuple[float, ...] = ()
    segment = ""
    if not surface.features.empty:  # surfaces without a schema ignore context
        try:
            features = tuple(surface.features.vector(context).tolist())
        except FeatureError as exc:
            raise invalid(exc.field, str(exc).removeprefix(f"{exc.field}: ")) from None
        segment_feature = surface.cold_start.segment_feature
        segment = str(context.get(segment_feature, "")) if segment_feature else ""
    call = RecommendCall(
        pseudonym=pseudonymize(req.user_id, config.pseudonym_key.encode()),
        surface=surface.name,
        n=n,
        candidates=candidates,
        features=features,
        segment=segment,
    )
    return call, context


def context_features(context: object) -> dict[str, float | str]:
    numeric = context.numeric  # type: ignore[attr-defined]
    categorical = context.categorical  # type: ignore[attr-defined]
    if len(numeric) + len(categorical) > MAX_CONTEXT_ENTRIES:
        raise invalid("context", f"must have at most {MAX_CONTEXT_ENTRIES} entries")
    features: dict[str, float | str] = {}
    for key, value in numeric.items():
        _check_feature_name(key)
        if not math.isfinite(value):
            raise invalid(f"context.numeric[{quote(key)}]", f"must be finite, got {value}")
        features[key] = value
    for key, text in categorical.items():
        _check_feature_name(key)
        if key in features:
            raise invalid(f"context.categorical[{quote(key)}]", "is also a numeric feature")
        if len(text.encode()) > MAX_CATEGORICAL_BYTES:
            raise invalid(f"context.categorical[{quote(key)}]", f"must be at most {MAX_CATEGORICAL_BYTES} bytes")
        features[key] = text
    return features


def _check_feature_name(key: str) -> None:
    if not NAME_PATTERN.match(key):
        raise invalid("context", f"feature name {quote(key)} must be 1..64 characters of [A-Za-z0-9_.-]")


def feedback_call(event: feedback_pb2.FeedbackEvent, config: ServiceConfig, now_ms: int | None = None) -> FeedbackCall:
    event_id_size = len(event.event_id.encode())
    if event_id_size == 0:
        raise invalid("event_id", "must not be empty")
    if event_id_size > MAX_EVENT_ID_BYTES:
        raise invalid("event_id", f"must be at most {MAX_EVENT_ID_BYTES} bytes, got {event_id_size}")
    check_user_id(event.user_id)
    _check_id_size("item_id", event.item_id, MAX_ITEM_ID_BYTES)
    if event.decision_id:
        _check_id_size("decision_id", event.decision_id, MAX_DECISION_ID_BYTES)
    elif not event.surface:
        raise invalid("surface", "is required when decision_id is empty")
    if event.surface:
        surface = surface_named(config, event.surface)
        if event.item_id not in surface.index:
            raise invalid("item_id", f"item {quote(event.item_id)} is not in surface {surface.name!r}")
    signal = _signal(event.signal)
    problem = check_value(signal, event.value)
    if problem:
        raise invalid("value", problem)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    occurred_at_ms = now_ms
    if event.HasField("occurred_at"):
        occurred_at_ms = timestamp_ms("occurred_at", event.occurred_at)
        if occurred_at_ms > now_ms + MAX_FUTURE_SKEW_MS:
            raise invalid("occurred_at", "must not be more than 5 minutes in the future")
    return FeedbackCall(
        pseudonym=pseudonymize(event.user_id, config.pseudonym_key.encode()),
        event_id=event.event_id,
        item_id=event.item_id,
        signal=int(signal),
        value=event.value,
        occurred_at_ms=occurred_at_ms,
        decision_id=event.decision_id,
        surface=event.surface,
    )


def _check_id_size(field: str, value: str, limit: int) -> None:
    size = len(value.encode())
    if size == 0:
        raise invalid(field, "must not be empty")
    if size > limit:
        raise invalid(field, f"must be at most {limit} bytes, got {size}")


def timestamp_ms(field: str, stamp: object) -> int:
    """Milliseconds since the epoch of a valid `google.protobuf.Timestamp` (0001..9999, nanos in
    [0, 1e9)), or INVALID_ARGUMENT naming the part that is out of range."""
    seconds, nanos = stamp.seconds, stamp.nanos  # type: ignore[attr-defined]
    if not 0 <= nanos < 1_000_000_000:
        raise invalid(f"{field}.nanos", f"must be in [0, 999999999], got {nanos}")
    if not MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS:
        raise invalid(f"{field}.seconds", f"must be a time in years 1..9999, got {seconds}")
    return int(seconds * 1000 + nanos // 1_000_000)


def _signal(number: int) -> Signal:
    try:
        return Signal(number)
    except ValueError:
        known = ", ".join(s.name for s in Signal)  # CLICK, DWELL, ...
        if number == 0:
            raise invalid("signal", f"must be set (one of {known})") from None
        raise invalid("signal", f"unknown signal {number}; known: {known}") from None


def batch_size(events: int) -> None:
    if events == 0:
        raise invalid("events", "must not be empty")
    if events > MAX_BATCH_EVENTS:
        raise invalid("events", f"must have at most {MAX_BATCH_EVENTS} events, got {events}")


__all__ = ["ServiceError", "batch_size", "check_user_id", "feedback_call", "recommend_call", "surface_named"]
