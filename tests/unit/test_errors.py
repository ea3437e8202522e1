"""The error contract's pure parts: field violations, quoting, timestamps, batch prefixes."""

from __future__ import annotations

import ast

import grpc
import pytest
from google.protobuf import timestamp_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardloop.client.errors import violations_in
from rewardloop.server.status import MAX_MESSAGE_CHARS, ServiceError, invalid, quote, to_service_error
from rewardloop.server.validation import MAX_TIMESTAMP_SECONDS, MIN_TIMESTAMP_SECONDS, timestamp_ms
from rewardloop.workers.messages import Rejected


def test_invalid_names_the_field_in_the_message_and_in_the_details() -> None:
    error = invalid("n", "must be in [1, 100], got 0")
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "n: must be in [1, 100], got 0"
    found = violations_in(error.trailing_metadata())
    assert [(v.field, v.description) for v in found] == [("n", "must be in [1, 100], got 0")]


def test_a_batch_prefix_applies_to_the_message_and_every_violation() -> None:
    error = invalid("occurred_at.nanos", "must be in [0, 999999999], got -1").within("events[7]")
    assert error.message.startswith("events[7].occurred_at.nanos: ")
    assert [v.field for v in error.violations] == ["events[7].occurred_at.nanos"]


def test_shard_rejections_keep_their_field() -> None:
    error = to_service_error(Rejected("INVALID_ARGUMENT", "item_id: 'x' was not among the decision's items", "item_id"))
    assert [v.field for v in error.violations] == ["item_id"]
    assert to_service_error(Rejected("NOT_FOUND", "decision_id 'd' is not a decision of this user")).violations == ()


@settings(max_examples=60)
@given(st.one_of(st.text(max_size=50), st.integers(41, 200_000).map(lambda n: "é" * n)))
def test_quote_is_short_whatever_the_value(value: str) -> None:
    quoted = quote(value)
    assert len(quoted) <= 200
    # A Python literal of the value's beginning (repr picks " when the value holds a ').
    shown = quoted.removesuffix(f"... ({len(value.encode('utf-8'))} bytes)")
    assert value.startswith(ast.literal_eval(shown))


@settings(max_examples=20)
@given(st.integers(1_001, 5_000).map(lambda n: "x" * n))
def test_messages_and_violations_are_capped(problem: str) -> None:
    error = ServiceError(grpc.StatusCode.INVALID_ARGUMENT, problem, invalid("f", problem).violations)
    assert len(error.message) <= MAX_MESSAGE_CHARS
    assert all(len(v.description) <= MAX_MESSAGE_CHARS for v in error.violations)


@pytest.mark.parametrize(
    ("seconds", "nanos", "field"),
    [
        (1_700_000_000, -1, "occurred_at.nanos"),
        (1_700_000_000, 1_000_000_000, "occurred_at.nanos"),
        (MIN_TIMESTAMP_SECONDS - 1, 0, "occurred_at.seconds"),
        (MAX_TIMESTAMP_SECONDS + 1, 0, "occurred_at.seconds"),
        (-(2**63), 0, "occurred_at.seconds"),
    ],
)
def test_timestamps_outside_the_valid_range_name_their_part(seconds: int, nanos: int, field: str) -> None:
    with pytest.raises(ServiceError, match=rf"^{field}: ") as err:
        timestamp_ms("occurred_at", timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
    assert err.value.violations[0].field == field


@given(st.integers(MIN_TIMESTAMP_SECONDS, MAX_TIMESTAMP_SECONDS), st.integers(0, 999_999_999))
def test_valid_timestamps_agree_with_protobuf(seconds: int, nanos: int) -> None:
    stamp = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    assert timestamp_ms("occurred_at", stamp) == stamp.ToMilliseconds()
