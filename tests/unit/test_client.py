"""The SDK against a real in-process gRPC server with fake servicers (no Redis, no Ray).

The server is the thread-pool `grpc.server`, so blocking `Client` tests and `AsyncClient` tests
(on the session event loop) can share it without the blocking client stalling the loop.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from dataclasses import FrozenInstanceError, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from rewardloop.client import (
    DEFAULT_TIMEOUT,
    AsyncClient,
    Client,
    DeadlineExceeded,
    FeedbackEvent,
    FeedbackResult,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Recommendation,
    RecommendedItem,
    ResourceExhausted,
    RewardloopError,
    Signal,
    Unauthenticated,
    Unavailable,
    channel_options,
)
from rewardloop.client.errors import error_for
from rewardloop.v1 import (
    assigner_pb2,
    assigner_pb2_grpc,
    common_pb2,
    feedback_pb2,
    feedback_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
)

# Long enough that a short client timeout always fires first; released at teardown.
SLOW_SECONDS = 5.0
SHORT_TIMEOUT = 0.2


@dataclass
class Attempt:
    method: str
    request: Any
    metadata: dict[str, str | bytes]
    time_remaining: float | None


@dataclass
class FakeRewardloop(
    recommender_pb2_grpc.RecommenderServicer,
    feedback_pb2_grpc.FeedbackServicer,
    assigner_pb2_grpc.AssignerServicer,
):
    """Records every attempt; fails the next attempts as scripted in `failures`, or answers.

    Like the service, it remembers recorded event ids and answers `duplicate` for a repeat.
    """

    failures: list[tuple[grpc.StatusCode, str]] = field(default_factory=list)
    delay: float = 0.0
    attempts: list[Attempt] = field(default_factory=list)
    batch_rejections: dict[int, tuple[grpc.StatusCode, str]] = field(default_factory=dict)
    released: threading.Event = field(default_factory=threading.Event)
    recorded: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _attempt(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.attempts.append(
                Attempt(method, request, dict(context.invocation_metadata()), context.time_remaining())
            )
            failure = self.failures.pop(0) if self.failures else None
        if self.delay:
            self.released.wait(self.delay)
        if failure is not None:
            context.abort(*failure)

    def _remember(self, event: feedback_pb2.FeedbackEvent) -> bool:
        with self._lock:
            duplicate = event.event_id in self.recorded
            self.recorded.add(event.event_id)
        return duplicate

    def Recommend(self, request, context):
        self._attempt("Recommend", request, context)
        return recommender_pb2.RecommendResponse(
            decision_id="d-1",
            items=[
                recommender_pb2.RecommendedItem(item_id="a", score=0.9, propensity=0.8, slot=0),
                recommender_pb2.RecommendedItem(item_id="b", score=0.5, propensity=0.25, slot=1),
            ],
            policy="ucb1",
            model_version="cfg.17",
            assignments=[common_pb2.ExperimentAssignment(experiment="layout", variant="treatment")],
        )

    def Record(self, request, context):
        self._attempt("Record", request, context)
        return feedback_pb2.RecordResponse(duplicate=self._remember(request), reward=0.75)

    def RecordBatch(self, request, context):
        self._attempt("RecordBatch", request, context)
        results = []
        for index, event in enumerate(request.events):
            if index in self.batch_rejections:
                code, message = self.batch_rejections[index]
                results.append(feedback_pb2.EventResult(code=code.value[0], message=message))
            else:
                results.append(feedback_pb2.EventResult(code=0, duplicate=self._remember(event), reward=0.5))
        return feedback_pb2.RecordBatchResponse(results=results)

    def Assign(self, request, context):
        self._attempt("Assign", request, context)
        return assigner_pb2.AssignResponse(
            assignments=[
                common_pb2.ExperimentAssignment(experiment=name, variant="control")
                for name in (request.experiments or ["layout", "ranker"])
            ]
        )


@pytest.fixture
def fake() -> FakeRewardloop:
    return FakeRewardloop()


@pytest.fixture
def target(fake: FakeRewardloop) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    recommender_pb2_grpc.add_RecommenderServicer_to_server(fake, server)
    feedback_pb2_grpc.add_FeedbackServicer_to_server(fake, server)
    assigner_pb2_grpc.add_AssignerServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    fake.released.set()
    server.stop(grace=None).wait()


@pytest.fixture
def client(target: str) -> Iterator[Client]:
    with Client(target) as client:
        yield client


@pytest.fixture
async def aclient(target: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(target) as client:
        yield client


def unavailable_twice(fake: FakeRewardloop) -> None:
    fake.failures = [(grpc.StatusCode.UNAVAILABLE, "shard restarting")] * 2


# --- recommend -------------------------------------------------------------------------------


def test_recommend_sends_every_field(client: Client, fake: FakeRewardloop) -> None:
    client.recommend(
        "user-1",
        "home_feed",
        n=2,
        context={"hour": 21, "ratio": 0.5, "premium": True, "returning": False, "device": "ios"},
        candidates=["a", "b", "c"],
    )

    [attempt] = fake.attempts
    request = attempt.request
    assert (request.user_id, request.surface, request.n) == ("user-1", "home_feed", 2)
    assert list(request.candidates) == ["a", "b", "c"]
    assert dict(request.context.numeric) == {"hour": 21.0, "ratio": 0.5, "premium": 1.0, "returning": 0.0}
    assert dict(request.context.categorical) == {"device": "ios"}


def test_recommend_defaults_leave_optional_fields_empty(client: Client, fake: FakeRewardloop) -> None:
    client.recommend("user-1", "home_feed")

    request = fake.attempts[0].request
    assert request.n == 1
    assert not request.HasField("context")
    assert list(request.candidates) == []


def test_recommend_returns_typed_recommendation(client: Client) -> None:
    rec = client.recommend("user-1", "home_feed", n=2)

    assert rec == Recommendation(
        decision_id="d-1",
        items=(
            RecommendedItem(item_id="a", score=0.9, propensity=0.8, slot=0),
            RecommendedItem(item_id="b", score=0.5, propensity=0.25, slot=1),
        ),
        policy="ucb1",
        model_version="cfg.17",
        assignments={"layout": "treatment"},
    )
    assert rec.item_ids == ("a", "b")
    with pytest.raises(FrozenInstanceError):
        rec.policy = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"context": {"hour": 21, "tags": ["a"]}}, TypeError, r"context\['tags'\].*list"),
        ({"context": {"when": None}}, TypeError, r"context\['when'\].*NoneType"),
        ({"context": {1: "x"}}, TypeError, r"context key 1 must be a str"),
        ({"candidates": "abc"}, TypeError, r"candidates must be a sequence of str"),
        ({"n": 0}, ValueError, r"n must be >= 1, got 0"),
        ({"n": 2.0}, TypeError, r"n must be an int"),
        ({"timeout": 0}, ValueError, r"timeout must be a finite number of seconds > 0"),
    ],
)
def test_bad_recommend_arguments_fail_before_any_call(
    client: Client, fake: FakeRewardloop, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        client.recommend("user-1", "home_feed", **kwargs)
    assert fake.attempts == []


# --- record ----------------------------------------------------------------------------------


# 14:30:05.25 at UTC+2 is 12:30:05.25 UTC.
OCCURRED_AT = datetime(2026, 7, 1, 14, 30, 5, 250_000, tzinfo=timezone(timedelta(hours=2)))
FULL_RECORD: dict[str, Any] = {
    "decision_id": "d-1",
    "surface": "home_feed",
    "event_id": "evt-7",
    "occurred_at": OCCURRED_AT,
}
FULL_RECORD_PROTO = feedback_pb2.FeedbackEvent(
    event_id="evt-7",
    user_id="user-1",
    decision_id="d-1",
    item_id="a",
    surface="home_feed",
    signal=feedback_pb2.SIGNAL_DWELL,
    value=42.5,
    occurred_at=timestamp_pb2.Timestamp(
        seconds=int(datetime(2026, 7, 1, 12, 30, 5, tzinfo=UTC).timestamp()), nanos=250_000_000
    ),
)


def test_record_sends_every_field(client: Client, fake: FakeRewardloop) -> None:
    result = client.record("user-1", "a", Signal.DWELL, 42.5, **FULL_RECORD)

    assert fake.attempts[0].request == FULL_RECORD_PROTO
    assert result == FeedbackResult(event_id="evt-7", duplicate=False, reward=0.75)
    assert result.ok and result.error is None


async def test_async_record_sends_every_field(aclient: AsyncClient, fake: FakeRewardloop) -> None:
    result = await aclient.record("user-1", "a", "dwell", 42.5, **FULL_RECORD)

    assert fake.attempts[0].request == FULL_RECORD_PROTO
    assert result == FeedbackResult(event_id="evt-7", duplicate=False, reward=0.75)


def test_record_defaults(client: Client, fake: FakeRewardloop) -> None:
    client.record("user-1", "a", "click", surface="home_feed")

    request = fake.attempts[0].request
    assert request.value == 1.0
    assert request.decision_id == ""
    assert not request.HasField("occurred_at")


@pytest.mark.parametrize(
    ("signal", "expected"),
    [
        ("click", feedback_pb2.SIGNAL_CLICK),
        ("DWELL", feedback_pb2.SIGNAL_DWELL),
        ("Rating", feedback_pb2.SIGNAL_RATING),
        (Signal.LIKE, feedback_pb2.SIGNAL_LIKE),
        (Signal.CLICK, feedback_pb2.SIGNAL_CLICK),
    ],
)
def test_signal_by_name_or_enum(client: Client, fake: FakeRewardloop, signal: Signal | str, expected: int) -> None:
    client.record("user-1", "a", signal, surface="home_feed")

    assert fake.attempts[0].request.signal == expected


def test_signal_enum_mirrors_the_proto_enum() -> None:
    proto = {name.removeprefix("SIGNAL_"): number for name, number in feedback_pb2.Signal.items()}
    del proto["UNSPECIFIED"]

    assert {member.name: member.value for member in Signal} == proto


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"signal": "buy"}, ValueError, r"unknown signal 'buy'; expected one of: click, dwell"),
        ({"signal": "unspecified"}, ValueError, r"unknown signal"),
        ({"signal": 1}, TypeError, r"signal must be a Signal or its name, got int"),
        ({"occurred_at": datetime(2026, 7, 1, 12, 0)}, ValueError, r"occurred_at must be timezone-aware"),
        ({"occurred_at": "2026-07-01"}, TypeError, r"occurred_at must be a datetime"),
        ({"value": "1.5"}, TypeError, r"value must be a number, got str"),
        ({"decision_id": 7}, TypeError, r"decision_id must be a str or None, got int"),
    ],
)
def test_bad_record_arguments_fail_before_any_call(
    client: Client, fake: FakeRewardloop, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    arguments = {"signal": "click", "surface": "home_feed", **kwargs}
    with pytest.raises(error, match=match):
        client.record("user-1", "a", **arguments)
    assert fake.attempts == []


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.recommend(42, "home_feed"),
        lambda c: c.record(42, "a", "click", surface="home_feed"),
        lambda c: c.record_batch([FeedbackEvent(42, "a", "click")]),
        lambda c: c.assign(42),
    ],
)
def test_user_id_of_wrong_type_is_named(client: Client, fake: FakeRewardloop, call) -> None:
    with pytest.raises(TypeError, match=r"^user_id must be a str, got int$"):
        call(client)
    assert fake.attempts == []


def test_record_generates_a_fresh_event_id_per_call(client: Client, fake: FakeRewardloop) -> None:
    first = client.record("user-1", "a", "click", surface="home_feed")
    second = client.record("user-1", "a", "click", surface="home_feed")

    sent = [attempt.request.event_id for attempt in fake.attempts]
    assert sent == [first.event_id, second.event_id]
    assert first.event_id != second.event_id
    assert uuid.UUID(hex=first.event_id).version == 4


# --- retries ---------------------------------------------------------------------------------


def test_sync_retry_reuses_the_generated_event_id(client: Client, fake: FakeRewardloop) -> None:
    unavailable_twice(fake)

    result = client.record("user-1", "a", "click", surface="home_feed")

    event_ids = [attempt.request.event_id for attempt in fake.attempts]
    assert event_ids == [result.event_id] * 3
    assert not result.duplicate  # the failed attempts recorded nothing


async def test_async_retry_reuses_the_generated_event_id(aclient: AsyncClient, fake: FakeRewardloop) -> None:
    unavailable_twice(fake)

    result = await aclient.record("user-1", "a", "click", surface="home_feed")

    event_ids = [attempt.request.event_id for attempt in fake.attempts]
    assert event_ids == [result.event_id] * 3


def test_batch_retry_reuses_event_ids(client: Client, fake: FakeRewardloop) -> None:
    unavailable_twice(fake)
    events = [FeedbackEvent("user-1", "a", "click", surface="home_feed") for _ in range(3)]

    client.record_batch(events)

    sent = [[event.event_id for event in attempt.request.events] for attempt in fake.attempts]
    assert sent == [[event.event_id for event in events]] * 3


@pytest.mark.parametrize(
    ("call", "method"),
    [
        (lambda c: c.recommend("user-1", "home_feed"), "Recommend"),
        (lambda c: c.assign("user-1"), "Assign"),
        (lambda c: c.record_batch([FeedbackEvent("user-1", "a", "click", surface="s")]), "RecordBatch"),
    ],
)
def test_every_service_retries_unavailable(client: Client, fake: FakeRewardloop, call, method: str) -> None:
    unavailable_twice(fake)

    call(client)

    assert [attempt.method for attempt in fake.attempts] == [method] * 3


def test_unavailable_is_raised_once_attempts_are_spent(client: Client, fake: FakeRewardloop) -> None:
    fake.failures = [(grpc.StatusCode.UNAVAILABLE, "redis down")] * 10

    with pytest.raises(Unavailable, match="UNAVAILABLE: redis down") as caught:
        client.recommend("user-1", "home_feed")

    assert len(fake.attempts) == 5
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert isinstance(caught.value.__cause__, grpc.RpcError)


def test_sync_invalid_argument_is_not_retried(client: Client, fake: FakeRewardloop) -> None:
    fake.failures = [(grpc.StatusCode.INVALID_ARGUMENT, "value: must be in [0, 86400], got -3")]

    with pytest.raises(InvalidArgument) as caught:
        client.record("user-1", "a", "dwell", -3, surface="home_feed")

    assert len(fake.attempts) == 1
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details == "value: must be in [0, 86400], got -3"
    assert str(caught.value) == "INVALID_ARGUMENT: value: must be in [0, 86400], got -3"


async def test_async_invalid_argument_is_not_retried(aclient: AsyncClient, fake: FakeRewardloop) -> None:
    fake.failures = [(grpc.StatusCode.INVALID_ARGUMENT, "surface: unknown key 'x'")]

    with pytest.raises(InvalidArgument, match=r"^INVALID_ARGUMENT: surface: unknown key 'x'$"):
        await aclient.recommend("user-1", "home_feed")

    assert len(fake.attempts) == 1


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.INTERNAL, RewardloopError),
    ],
)
def test_status_codes_map_to_exceptions_without_retry(
    client: Client, fake: FakeRewardloop, code: grpc.StatusCode, error: type[RewardloopError]
) -> None:
    fake.failures = [(code, "because")]

    with pytest.raises(RewardloopError) as caught:
        client.assign("user-1", ["layout"])

    assert type(caught.value) is error
    assert (caught.value.code, caught.value.details) == (code, "because")
    assert str(caught.value) == f"{code.name}: because"
    assert len(fake.attempts) == 1


def test_error_for_unlisted_code_is_the_base_class() -> None:
    error = error_for(grpc.StatusCode.ABORTED, "conflict")

    assert type(error) is RewardloopError
    assert str(error) == "ABORTED: conflict"
    assert str(error_for(grpc.StatusCode.CANCELLED)) == "CANCELLED"


# --- deadlines and metadata ------------------------------------------------------------------


def test_sync_deadline_exceeded(client: Client, fake: FakeRewardloop) -> None:
    fake.delay = SLOW_SECONDS

    with pytest.raises(DeadlineExceeded) as caught:
        client.recommend("user-1", "home_feed", timeout=SHORT_TIMEOUT)

    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(fake.attempts) == 1


async def test_async_deadline_exceeded(target: str, fake: FakeRewardloop) -> None:
    fake.delay = SLOW_SECONDS

    async with AsyncClient(target, default_timeout=SHORT_TIMEOUT) as client:
        with pytest.raises(DeadlineExceeded):
            await client.record("user-1", "a", "click", surface="home_feed")

    assert len(fake.attempts) == 1


def test_every_call_carries_a_deadline(target: str, fake: FakeRewardloop) -> None:
    with Client(target) as client:
        client.recommend("user-1", "home_feed")
        client.assign("user-1")
    with Client(target, default_timeout=30) as client:
        client.record("user-1", "a", "click", surface="home_feed", timeout=7)

    # The server sees the deadline the client set (rounded on the wire, hence the tolerance).
    remaining = [attempt.time_remaining for attempt in fake.attempts]
    assert remaining == [
        pytest.approx(DEFAULT_TIMEOUT, abs=0.5),
        pytest.approx(DEFAULT_TIMEOUT, abs=0.5),
        pytest.approx(7, abs=0.5),
    ]


def test_sync_metadata_is_sent_on_every_call(target: str, fake: FakeRewardloop) -> None:
    with Client(target, metadata={"authorization": "Bearer t0k"}) as client:
        client.recommend("user-1", "home_feed")
        client.record("user-1", "a", "click", surface="home_feed")
        client.record_batch([FeedbackEvent("user-1", "a", "click", surface="home_feed")])
        client.assign("user-1")

    assert [attempt.metadata.get("authorization") for attempt in fake.attempts] == ["Bearer t0k"] * 4
    assert fake.attempts[0].metadata["user-agent"].startswith("rewardloop-client-python/")


async def test_async_metadata_is_sent_on_every_call(target: str, fake: FakeRewardloop) -> None:
    async with AsyncClient(target, metadata=[("authorization", "Bearer t0k"), ("x-team", "search")]) as client:
        await client.recommend("user-1", "home_feed")
        await client.record("user-1", "a", "click", surface="home_feed")
        await client.record_batch([FeedbackEvent("user-1", "a", "click", surface="home_feed")])
        await client.assign("user-1")

    assert [attempt.metadata.get("authorization") for attempt in fake.attempts] == ["Bearer t0k"] * 4
    assert {attempt.metadata.get("x-team") for attempt in fake.attempts} == {"search"}


# --- record_batch and assign -----------------------------------------------------------------


def test_record_batch_returns_one_result_per_event(client: Client, fake: FakeRewardloop) -> None:
    fake.batch_rejections = {1: (grpc.StatusCode.NOT_FOUND, "decision_id: unknown 'd-9'")}
    events = [
        FeedbackEvent("user-1", "a", "click", decision_id="d-1", event_id="e-1"),
        FeedbackEvent("user-2", "b", Signal.RATING, 4.5, decision_id="d-9"),
        FeedbackEvent("user-3", "c", "dwell", 12, surface="home_feed"),
    ]

    results = client.record_batch(events)

    sent = fake.attempts[0].request.events
    assert [event.event_id for event in sent] == [event.event_id for event in events]
    assert [event.signal for event in sent] == [
        feedback_pb2.SIGNAL_CLICK,
        feedback_pb2.SIGNAL_RATING,
        feedback_pb2.SIGNAL_DWELL,
    ]
    assert [result.event_id for result in results] == ["e-1", events[1].event_id, events[2].event_id]
    assert [result.ok for result in results] == [True, False, True]
    assert results[0] == FeedbackResult(event_id="e-1", duplicate=False, reward=0.5)
    rejected = results[1]
    assert (rejected.code, rejected.message, rejected.reward) == (
        grpc.StatusCode.NOT_FOUND,
        "decision_id: unknown 'd-9'",
        0.0,
    )
    assert isinstance(rejected.error, NotFound)
    assert str(rejected.error) == "NOT_FOUND: decision_id: unknown 'd-9'"


async def test_async_record_batch(aclient: AsyncClient, fake: FakeRewardloop) -> None:
    fake.batch_rejections = {0: (grpc.StatusCode.INVALID_ARGUMENT, "value: must be finite")}
    events = [
        FeedbackEvent("user-1", "a", "click", float("nan"), surface="s"),
        FeedbackEvent("u", "b", "like"),
    ]

    results = await aclient.record_batch(events)

    assert [type(result.error) for result in results] == [InvalidArgument, type(None)]


def test_resending_the_same_events_is_counted_once(client: Client) -> None:
    events = [FeedbackEvent("user-1", "a", "click", surface="home_feed") for _ in range(2)]

    first = client.record_batch(events)
    again = client.record_batch(events)  # e.g. after DeadlineExceeded

    assert [result.duplicate for result in first] == [False, False]
    assert [result.duplicate for result in again] == [True, True]


def test_feedback_event_fixes_its_event_id_at_creation() -> None:
    event = FeedbackEvent("user-1", "a", "click", surface="home_feed")

    assert re.fullmatch(r"[0-9a-f]{32}", event.event_id)
    assert event.signal is Signal.CLICK
    assert FeedbackEvent("user-1", "a", "click").event_id != event.event_id


def test_record_batch_rejects_what_is_not_an_event(client: Client, fake: FakeRewardloop) -> None:
    with pytest.raises(TypeError, match=r"events\[1\] must be a FeedbackEvent, got dict"):
        client.record_batch([FeedbackEvent("u", "a", "click"), {"user_id": "u"}])  # type: ignore[list-item]
    assert client.record_batch([]) == []
    assert fake.attempts == []


def test_assign(client: Client, fake: FakeRewardloop) -> None:
    assert client.assign("user-1", ["layout"]) == {"layout": "control"}
    assert client.assign("user-1") == {"layout": "control", "ranker": "control"}

    assert [list(attempt.request.experiments) for attempt in fake.attempts] == [["layout"], []]
    assert fake.attempts[0].request.user_id == "user-1"
    with pytest.raises(TypeError, match="experiments must be a sequence of str"):
        client.assign("user-1", "layout")


async def test_async_client_round_trip(aclient: AsyncClient) -> None:
    rec = await aclient.recommend("user-1", "home_feed", n=2, context={"device": "ios"})
    result = await aclient.record("user-1", rec.item_ids[0], Signal.CLICK, decision_id=rec.decision_id)

    assert rec.item_ids == ("a", "b")
    assert result.reward == 0.75
    assert await aclient.assign("user-1", ["layout"]) == {"layout": "control"}


# --- construction ----------------------------------------------------------------------------


def test_service_config_retries_only_unavailable_on_all_services() -> None:
    import json

    options = dict(channel_options([("grpc.max_receive_message_length", 1 << 20)]))
    config = json.loads(options["grpc.service_config"])

    assert options["grpc.enable_retries"] == 1
    assert options["grpc.max_receive_message_length"] == 1 << 20
    [method_config] = config["methodConfig"]
    assert {name["service"] for name in method_config["name"]} == {
        "rewardloop.v1.Recommender",
        "rewardloop.v1.Feedback",
        "rewardloop.v1.Assigner",
    }
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert method_config["waitForReady"] is False


def test_client_on_a_borrowed_channel_leaves_it_open(target: str, fake: FakeRewardloop) -> None:
    channel = grpc.insecure_channel(target, options=channel_options())
    try:
        unavailable_twice(fake)
        with Client(channel=channel) as client:
            client.assign("user-1")
        assert len(fake.attempts) == 3  # the retry policy came with channel_options()
        with Client(channel=channel) as client:
            client.assign("user-1")  # still open after the first client closed
    finally:
        channel.close()


async def test_async_client_on_a_borrowed_channel(target: str, fake: FakeRewardloop) -> None:
    async with grpc.aio.insecure_channel(target, options=channel_options()) as channel:
        async with AsyncClient(channel=channel) as client:
            await client.assign("user-1")
        await AsyncClient(channel=channel).assign("user-1")

    assert len(fake.attempts) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "pass a target"),
        ({"target": ""}, "pass a target"),
        ({"target": "localhost:1", "default_timeout": -1}, "default_timeout must be"),
        ({"target": "localhost:1", "default_timeout": float("inf")}, "default_timeout must be"),
        ({"target": "localhost:1", "metadata": {"Authorization": "x"}}, "lower-case"),
    ],
)
def test_bad_construction(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Client(**kwargs)


def test_channel_and_target_are_exclusive() -> None:
    channel = grpc.insecure_channel("localhost:1")
    try:
        with pytest.raises(ValueError, match="either channel or target"):
            Client("localhost:1", channel=channel)
    finally:
        channel.close()


async def test_async_client_rejects_a_sync_channel() -> None:
    channel = grpc.insecure_channel("localhost:1")
    try:
        with pytest.raises(TypeError, match=r"channel must be a grpc\.aio\.Channel"):
            AsyncClient(channel=channel)
    finally:
        channel.close()


def test_secure_client_builds_with_credentials() -> None:
    # No TLS server here: construction and close must work without connecting.
    with Client("localhost:1", credentials=grpc.ssl_channel_credentials()) as client:
        assert client is not None
