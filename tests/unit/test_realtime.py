"""Real-time user features: exact window and session edges, bytes, restart and order independence."""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import numpy as np
import pytest

from rewardloop.learning.features.realtime import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    ActivityEvent,
    RealtimeFeatures,
    UserActivity,
)
from rewardloop.learning.params import ConfigError

T0 = 1_700_000_000_000  # an epoch time in ms
CATEGORIES = ("news", "sport", "music")
ITEMS = {"n1": "news", "n2": "news", "s1": "sport", "m1": "music"}
FEATURES = RealtimeFeatures(categories=CATEGORIES, item_categories=ITEMS)


def decision(t: int, item: str = "n1") -> ActivityEvent:
    return ActivityEvent(t, "decision", item_id=item)


def feedback(t: int, positive: bool = False, item: str = "n1", category: str | None = None) -> ActivityEvent:
    return ActivityEvent(t, "feedback", positive, float(positive), item, category)


def state_of(events: list[ActivityEvent], features: RealtimeFeatures = FEATURES) -> UserActivity:
    state = features.new_state()
    for event in events:
        features.observe(state, event)
    return state


def features_at(events: list[ActivityEvent], now: int, features: RealtimeFeatures = FEATURES) -> dict[str, float]:
    return dict(zip(features.names, features.vector(state_of(events, features), now).tolist(), strict=True))


def rounded(expected: float) -> Any:
    """``expected`` up to float rounding, for features computed with a transcendental function."""
    return pytest.approx(expected, rel=1e-9, abs=1e-12)


def random_stream(n: int, seed: int, span_ms: int = 3 * DAY_MS) -> list[ActivityEvent]:
    """Events over ``span_ms`` in time order, some sharing a millisecond, then some feedback delivered late."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(T0, T0 + span_ms, n))
    times[1::7] = times[0::7][: len(times[1::7])]  # ties: same millisecond, different events
    times.sort()
    items = [*ITEMS, "unknown"]
    events = []
    for t in times.tolist():
        item = items[int(rng.integers(len(items)))]
        if rng.random() < 0.5:
            events.append(decision(t, item))
        else:
            category = "sport" if rng.random() < 0.1 else None
            events.append(feedback(t, bool(rng.random() < 0.3), item, category))
    # Delivery order: a third of the events arrive up to 2 h late.
    delay = np.where(rng.random(n) < 0.3, rng.integers(0, 2 * HOUR_MS, n), 0)
    arrival = np.argsort(times + delay, kind="stable")
    return [events[i] for i in arrival]


# --- windows ------------------------------------------------------------------------------


@pytest.mark.parametrize("window, name", [(HOUR_MS, "1h"), (DAY_MS, "24h")])
@pytest.mark.parametrize("kind", ["decisions", "feedback"])
def test_window_is_half_open(window: int, name: str, kind: str) -> None:
    now = T0 + 2 * DAY_MS
    make = decision if kind == "decisions" else feedback
    count = f"{kind}_{name}"
    assert features_at([make(now - window)], now)[count] == 0.0  # exactly now - window: out
    assert features_at([make(now - window + 1)], now)[count] == 1.0  # a millisecond later: in
    assert features_at([make(now)], now)[count] == 1.0  # now: in
    assert features_at([make(now + 1)], now)[count] == 0.0  # after now: not yet


def test_windows_count_kinds_separately() -> None:
    now = T0 + DAY_MS
    events = [decision(now - 2 * HOUR_MS), decision(now - 10), decision(now - 10), feedback(now - 3 * HOUR_MS, True)]
    events += [feedback(now - 5), feedback(now - 25 * HOUR_MS)]
    got = features_at(events, now)
    assert (got["decisions_1h"], got["decisions_24h"]) == (2.0, 3.0)
    assert (got["feedback_1h"], got["feedback_24h"]) == (1.0, 2.0)


def test_names_follow_the_config() -> None:
    features = RealtimeFeatures(windows_ms=(90 * MINUTE_MS, 3 * DAY_MS), categories=("a",))
    assert features.names == (
        "decisions_90m",
        "feedback_90m",
        "decisions_3d",
        "feedback_3d",
        "positive_rate_3d",
        "since_positive",
        "session_events",
        "session_seconds",
        "affinity:a",
    )
    assert features.dim == len(features.vector(features.new_state(), T0)) == 9


# --- session ------------------------------------------------------------------------------


def test_a_pause_of_exactly_the_gap_starts_a_new_session() -> None:
    gap = FEATURES.session_gap_ms
    first = [decision(T0), feedback(T0 + 60_000)]
    just_inside = [*first, decision(T0 + 60_000 + gap - 1)]
    on_the_edge = [*first, decision(T0 + 60_000 + gap)]
    now = T0 + 60_000 + gap
    assert features_at(just_inside, now)["session_events"] == 3.0
    assert features_at(just_inside, now)["session_seconds"] == (60_000 + gap - 1) / 1000
    assert features_at(on_the_edge, now)["session_events"] == 1.0
    assert features_at(on_the_edge, now)["session_seconds"] == 0.0


def test_the_session_ends_after_the_gap_without_events() -> None:
    gap = FEATURES.session_gap_ms
    events = [decision(T0), decision(T0 + 30_000)]
    alive = features_at(events, T0 + 30_000 + gap - 1)
    assert (alive["session_events"], alive["session_seconds"]) == (2.0, 30.0)
    over = features_at(events, T0 + 30_000 + gap)
    assert (over["session_events"], over["session_seconds"]) == (0.0, 0.0)
    assert features_at([], T0)["session_events"] == 0.0


def test_the_session_is_the_one_current_at_now() -> None:
    events = [decision(T0), decision(T0 + 1000), decision(T0 + 2 * HOUR_MS), decision(T0 + 2 * HOUR_MS + 5000)]
    back_then = features_at(events, T0 + 1000)
    assert (back_then["session_events"], back_then["session_seconds"]) == (2.0, 1.0)
    later = features_at(events, T0 + 2 * HOUR_MS + 6000)
    assert (later["session_events"], later["session_seconds"]) == (2.0, 5.0)


# --- positive rate, recency, affinity -----------------------------------------------------


def test_positive_rate_has_a_beta_1_1_prior_over_the_longest_window() -> None:
    now = T0 + DAY_MS
    # Exact: (positives + 1) / (feedback + 2) is one division of small integers.
    assert features_at([], now)["positive_rate_24h"] == 0.5
    assert features_at([feedback(now, True)], now)["positive_rate_24h"] == 2 / 3
    assert features_at([feedback(now, False)], now)["positive_rate_24h"] == 1 / 3
    events = [feedback(now - k * HOUR_MS, k < 3) for k in range(8)]  # 3 positives out of 8
    events += [decision(now - 5), feedback(now - DAY_MS, True), feedback(now - DAY_MS - 1, True)]  # not counted
    assert features_at(events, now)["positive_rate_24h"] == (3 + 1) / (8 + 2)


def test_since_positive_is_log_scaled_and_capped() -> None:
    cap_ms = FEATURES.recency_cap_ms
    cap_s = cap_ms / 1000

    def since(events: list[ActivityEvent], now: int) -> float:
        return features_at(events, now)["since_positive"]

    now = T0 + 10 * DAY_MS
    # The ends are exact (0.0, and 1.0 returned as is or as log1p(cap) / log1p(cap)); in between the
    # formula is checked up to rounding, whichever log1p (math's, numpy's SIMD one) computes it.
    assert since([], now) == 1.0
    assert since([feedback(now - 5, False), decision(now - 5)], now) == 1.0  # only positive feedback counts
    assert since([feedback(now, True)], now) == 0.0
    assert since([feedback(now - 1000, True)], now) == rounded(math.log1p(1.0) / math.log1p(cap_s))
    assert since([feedback(now - cap_ms + 1000, True)], now) == rounded(math.log1p(cap_s - 1) / math.log1p(cap_s))
    assert since([feedback(now - cap_ms, True)], now) == 1.0
    assert since([feedback(now - 3 * cap_ms, True)], now) == 1.0
    assert since([feedback(now - 2000, True), feedback(now - 1000, True)], now) == since(
        [feedback(now - 1000, True)], now
    )


def test_since_positive_remembers_a_positive_older_than_the_horizon() -> None:
    events = [feedback(T0, True), decision(T0 + 3 * DAY_MS)]
    state = state_of(events)
    assert state.n_events == 1  # the positive itself was dropped with the horizon
    got = dict(zip(FEATURES.names, FEATURES.vector(state, T0 + 3 * DAY_MS).tolist(), strict=True))
    assert got["since_positive"] == rounded(math.log1p(3 * DAY_MS / 1000) / math.log1p(FEATURES.recency_cap_ms / 1000))


def test_querying_the_past_ignores_later_events() -> None:
    events = [feedback(T0, True), feedback(T0 + HOUR_MS, True), decision(T0 + 2 * HOUR_MS)]
    got = features_at(events, T0 + HOUR_MS - 1)
    assert got["since_positive"] == rounded(
        math.log1p((HOUR_MS - 1) / 1000) / math.log1p(FEATURES.recency_cap_ms / 1000)
    )
    assert (got["feedback_24h"], got["decisions_24h"], got["session_events"]) == (1.0, 0.0, 0.0)
    assert features_at(events[1:], T0 + HOUR_MS - 1)["since_positive"] == 1.0


def test_affinity_is_each_categorys_share_of_positives_in_the_longest_window() -> None:
    now = T0 + DAY_MS
    events = [
        feedback(now - 10, True, "n1"),  # news, through item_categories
        feedback(now - 20, True, "n2"),  # news
        feedback(now - 30, True, "n1", category="sport"),  # the event's own category wins
        feedback(now - 40, True, "unmapped"),  # no category: counts in the total only
        feedback(now - 50, True, "s1", category="cinema"),  # undeclared category: likewise
        feedback(now - 60, False, "m1"),  # negative: not a positive
        decision(now - 70, "m1"),
        feedback(now - DAY_MS, True, "m1"),  # just outside the window
    ]
    got = features_at(events, now)
    assert [got[f"affinity:{c}"] for c in CATEGORIES] == [2 / 5, 1 / 5, 0.0]
    assert [got[f"affinity:{c}"] for c in CATEGORIES] == FEATURES.vector(state_of(events), now)[-3:].tolist()
    assert features_at([feedback(now, False, "m1")], now)["affinity:music"] == 0.0


def test_vector_does_not_modify_the_state() -> None:
    state = state_of(random_stream(300, seed=3))
    before = state.copy()
    FEATURES.vector(state, T0 + DAY_MS)
    assert state == before


# --- retention ----------------------------------------------------------------------------


def test_events_older_than_the_longest_window_are_dropped() -> None:
    state = state_of([decision(T0), decision(T0 + 1), decision(T0 + DAY_MS)])
    assert state.n_events == 2  # T0 is exactly a window before the latest event: out, as in `vector`
    FEATURES.observe(state, decision(T0 + 1))  # a late event still inside: kept
    assert state.n_events == 3
    FEATURES.observe(state, decision(T0))  # a late event already outside: dropped at once
    assert state.n_events == 3
    FEATURES.observe(state, decision(T0 + 2 * DAY_MS))
    assert state.n_events == 1 and state.latest_ms == T0 + 2 * DAY_MS


def test_the_state_stays_bounded_by_max_events() -> None:
    features = RealtimeFeatures(max_events=100)
    state = features.new_state()
    for k in range(1000):  # ten a minute: 1000 within the horizon, the oldest go
        features.observe(state, decision(T0 + 6000 * k))
        assert state.n_events == min(k + 1, 100)
    assert (int(state.keys[0]) >> 18) == T0 + 6000 * 900
    assert features.vector(state, T0 + 6000 * 999)[features.names.index("decisions_24h")] == 100.0
    assert len(features.dump(state)) == 30 + 8 * 100


# --- restart consistency and order independence ------------------------------------------


def query_times(events: list[ActivityEvent]) -> list[int]:
    latest = max(e.occurred_at_ms for e in events)
    return [latest, latest + 1, latest + 17 * MINUTE_MS, latest + 2 * HOUR_MS, latest + 8 * DAY_MS]


@pytest.mark.parametrize("max_events", [2048, 60])
def test_snapshot_plus_replay_equals_an_uninterrupted_run(max_events: int) -> None:
    features = RealtimeFeatures(max_events=max_events, categories=CATEGORIES, item_categories=ITEMS)
    events = random_stream(1500, seed=1)
    straight = state_of(events, features)
    for cut in (0, 1, 700, 1499, 1500):
        snapshot = features.dump(state_of(events[:cut], features))
        rebuilt = features.load(snapshot)
        for event in events[cut:]:
            features.observe(rebuilt, event)
        assert rebuilt == straight
        assert features.dump(rebuilt) == features.dump(straight)
        for now in query_times(events):
            assert features.vector(rebuilt, now).tobytes() == features.vector(straight, now).tobytes()


@pytest.mark.parametrize("max_events", [2048, 60])
def test_delivery_order_does_not_matter(max_events: int) -> None:
    features = RealtimeFeatures(max_events=max_events, categories=CATEGORIES, item_categories=ITEMS)
    events = random_stream(1500, seed=2)
    in_order = state_of(sorted(events, key=lambda e: e.occurred_at_ms), features)
    assert 0 < in_order.n_events <= max_events
    for seed in range(3):
        shuffled = [events[i] for i in np.random.default_rng(seed).permutation(len(events))]
        state = state_of(shuffled, features)
        assert features.dump(state) == features.dump(in_order)
        for now in query_times(events):
            assert features.vector(state, now).tobytes() == features.vector(in_order, now).tobytes()


def test_features_equal_a_brute_force_count() -> None:
    events = random_stream(800, seed=4, span_ms=DAY_MS)
    now = max(e.occurred_at_ms for e in events) + 5
    got = features_at(events, now)
    for window, name in ((HOUR_MS, "1h"), (DAY_MS, "24h")):
        inside = [e for e in events if now - window < e.occurred_at_ms <= now]
        assert got[f"decisions_{name}"] == sum(e.kind == "decision" for e in inside)
        assert got[f"feedback_{name}"] == sum(e.kind == "feedback" for e in inside)
    day = [e for e in events if now - DAY_MS < e.occurred_at_ms <= now and e.kind == "feedback"]
    assert got["positive_rate_24h"] == (sum(e.positive for e in day) + 1) / (len(day) + 2)


# --- bytes --------------------------------------------------------------------------------


def test_bytes_round_trip_exactly() -> None:
    for state in (FEATURES.new_state(), state_of(random_stream(500, seed=5))):
        blob = FEATURES.dump(state)
        assert blob[:4] == b"RLRT"
        assert FEATURES.load(blob) == state
        assert FEATURES.dump(FEATURES.load(blob)) == blob
        assert FEATURES.load(bytearray(blob)) == state
    assert FEATURES.dump(state_of(random_stream(500, seed=5))) == blob  # same state, same bytes


def _resealed(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _forged(keys: list[int], last_positive: int = -1) -> bytes:
    """A well-formed blob for FEATURES holding whatever keys, to test the value checks."""
    header = struct.pack("<4sH8sqI", b"RLRT", 1, FEATURES.fingerprint, last_positive, len(keys))
    return _resealed(header + np.asarray(keys, dtype="<i8").tobytes())


def _key(t: int, category: int = 0, flags: int = 0) -> int:
    return t << 18 | category << 2 | flags


BAD_BLOBS = [
    (lambda b: b"", "shorter than header"),
    (lambda b: b"XXXX" + b[4:], "not a realtime state"),
    (lambda b: b[:4] + struct.pack("<H", 9) + b[6:], "format version 9"),
    (lambda b: b[:-1], "checksum mismatch"),
    (lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:], "checksum mismatch"),
    (lambda b: _resealed(b[:-4] + b"\0"), "bytes for"),
    (lambda b: _resealed(b[:-12]), "bytes for"),
    (lambda b: _resealed(b[:6] + b"\0" * 8 + b[14:-4]), "another horizon_ms"),
    (lambda b: _forged([_key(T0 + 5), _key(T0)]), "not sorted"),
    (lambda b: _forged([_key(T0, flags=0b01)], T0), "positive event that is not feedback"),
    (lambda b: _forged([_key(T0, category=4)]), "undeclared category"),
    (lambda b: _forged([_key(T0), _key(T0 + DAY_MS)]), "older than the horizon"),
    (lambda b: _forged([-1]), "out of range"),
    (lambda b: _forged([_key(T0, flags=0b11)], T0 - 1), "later than the latest positive"),
    (lambda b: _forged([], -5), "latest positive at -5"),
    (lambda b: _forged([_key(T0 + k) for k in range(2049)]), "more than max_events"),
]


@pytest.mark.parametrize("damage, message", BAD_BLOBS)
def test_bad_bytes_are_rejected(damage: object, message: str) -> None:
    blob = FEATURES.dump(state_of([decision(T0), feedback(T0 + 1, True, "s1")]))
    assert callable(damage)
    with pytest.raises(ValueError, match=message):
        FEATURES.load(damage(blob))


def test_a_state_built_under_other_categories_is_rejected() -> None:
    blob = RealtimeFeatures(categories=("news",)).dump(state_of([decision(T0)]))
    with pytest.raises(ValueError, match="rebuild it from the log"):
        RealtimeFeatures(categories=("sport",)).load(blob)
    # What does not shape the state (shorter windows, session gap, cap, item mapping) keeps it usable.
    same_shape = RealtimeFeatures(windows_ms=(MINUTE_MS, DAY_MS), session_gap_ms=1, categories=("news",))
    assert same_shape.load(blob) == state_of([decision(T0)])


# --- validation ---------------------------------------------------------------------------


BAD_CONFIGS = [
    ({"windows_ms": ()}, r"windows_ms must be a non-empty sequence"),
    ({"windows_ms": 3600}, r"windows_ms must be a non-empty sequence"),
    ({"windows_ms": (0, DAY_MS)}, r"windows_ms\[0\] must be in \[1, "),
    ({"windows_ms": (HOUR_MS, 1.5)}, r"windows_ms\[1\] must be an integer"),
    ({"windows_ms": (True,)}, r"windows_ms\[0\] must be an integer"),
    ({"windows_ms": (DAY_MS, HOUR_MS)}, r"windows_ms must be strictly increasing"),
    ({"windows_ms": (HOUR_MS, HOUR_MS)}, r"windows_ms must be strictly increasing"),
    ({"session_gap_ms": 0}, r"session_gap_ms must be in \[1, "),
    ({"session_gap_ms": 1800.0}, r"session_gap_ms must be an integer"),
    ({"recency_cap_ms": -1}, r"recency_cap_ms must be in \[1, "),
    ({"max_events": 0}, r"max_events must be in \[1, 1000000\], got 0"),
    ({"categories": "news"}, r"categories must be a sequence of category names"),
    ({"categories": ("news", "")}, r"categories\[1\] must be a non-empty string"),
    ({"categories": ("news", 3)}, r"categories\[1\] must be a non-empty string"),
    ({"categories": ("news", "news")}, r"categories must be distinct"),
    ({"item_categories": [("n1", "news")]}, r"item_categories must be a mapping"),
    ({"categories": ("news",), "item_categories": {"s1": "sport"}}, r"item_categories\['s1'\] is 'sport'"),
    ({"categories": ("news",), "item_categories": {1: "news"}}, r"item_categories keys must be item ids"),
]


@pytest.mark.parametrize("kwargs, message", BAD_CONFIGS)
def test_bad_configs_name_the_parameter(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RealtimeFeatures(**kwargs)  # type: ignore[arg-type]


def test_configs_are_normalised_frozen_and_hashable() -> None:
    features = RealtimeFeatures(windows_ms=[HOUR_MS, DAY_MS], categories=["a"], item_categories={"i": "a"})  # type: ignore[arg-type]
    assert features == RealtimeFeatures(windows_ms=(HOUR_MS, DAY_MS), categories=("a",), item_categories={"i": "a"})
    assert isinstance(features.windows_ms, tuple) and isinstance(features.categories, tuple)
    assert hash(features) == hash(RealtimeFeatures(categories=("a",)))
    with pytest.raises(TypeError):
        features.item_categories["j"] = "a"  # type: ignore[index]
    with pytest.raises(AttributeError):
        features.max_events = 3  # type: ignore[misc]


BAD_EVENTS = [
    (ActivityEvent(-1, "decision"), r"event.occurred_at_ms must be an integer in \[0, 2\*\*44\)"),
    (ActivityEvent(2**44, "decision"), r"event.occurred_at_ms"),
    (ActivityEvent(float(T0), "decision"), r"event.occurred_at_ms"),  # type: ignore[arg-type]
    (ActivityEvent(T0, "click"), r"event.kind 'click': must be 'decision' or 'feedback'"),  # type: ignore[arg-type]
    (ActivityEvent(T0, "decision", True), r"a decision cannot be positive"),
    (ActivityEvent(T0, "feedback", 1), r"event.positive must be a bool"),  # type: ignore[arg-type]
    (ActivityEvent(T0, "feedback", True, math.nan), r"event.reward must be finite"),
    (ActivityEvent(T0, "feedback", True, "1"), r"event.reward must be a real number"),  # type: ignore[arg-type]
    (ActivityEvent(T0, "feedback", True, 1.0, 7), r"event.item_id must be a string"),  # type: ignore[arg-type]
    (ActivityEvent(T0, "feedback", True, 1.0, "n1", 3), r"event.category a string or None"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("event, message", BAD_EVENTS)
def test_bad_events_are_rejected_and_leave_the_state_alone(event: ActivityEvent, message: str) -> None:
    state = state_of([decision(T0)])
    with pytest.raises(ValueError, match=message):
        FEATURES.observe(state, event)
    assert state == state_of([decision(T0)])


@pytest.mark.parametrize("now", [-1, 2**44, 1.5, True])
def test_bad_query_times_are_rejected(now: object) -> None:
    with pytest.raises(ValueError, match="now_ms must be an integer"):
        FEATURES.vector(FEATURES.new_state(), now)  # type: ignore[arg-type]


def test_plain_tuples_and_numpy_scalars_are_events() -> None:
    as_tuple = state_of([(np.int64(T0), "feedback", np.bool_(True), np.float32(1.0), "n1", None)])  # type: ignore[list-item]
    assert as_tuple == state_of([feedback(T0, True, "n1")])
