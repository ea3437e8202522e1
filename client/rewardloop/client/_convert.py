"""Pure conversions between the SDK's types and the protobuf messages, shared by both clients.

Only type-level checks happen here (a context value that is neither number nor string, a str
where a list of ids is expected): ranges and formats are the service's to judge, and it answers
INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import grpc

from rewardloop.client._checks import require_str
from rewardloop.client.errors import RewardloopError, status_code
from rewardloop.client.types import (
    FeedbackEvent,
    FeedbackResult,
    Recommendation,
    RecommendedItem,
    Signal,
    new_event_id,
)
from rewardloop.v1 import assigner_pb2, common_pb2, feedback_pb2, recommender_pb2

ContextValue = float | int | str | bool


def context_to_proto(context: Mapping[str, ContextValue]) -> common_pb2.Context:
    """Numbers (bools as 0/1) go to `numeric`, strings to `categorical`."""
    message = common_pb2.Context()
    for key, value in context.items():
        if not isinstance(key, str):
            raise TypeError(f"context key {key!r} must be a str, got {type(key).__name__}")
        if isinstance(value, str):
            message.categorical[key] = value
        elif isinstance(value, int | float):  # bool is an int: True → 1.0
            message.numeric[key] = float(value)
        else:
            raise TypeError(f"context[{key!r}] must be a float, int, bool or str, got {type(value).__name__}")
    return message


def _ids(name: str, values: Iterable[str]) -> list[str]:
    # A bare str is iterable too: "abc" would silently become ["a", "b", "c"].
    if isinstance(values, str | bytes):
        raise TypeError(f"{name} must be a sequence of str, not a single {type(values).__name__}")
    return list(values)


def recommend_request(
    user_id: str,
    surface: str,
    *,
    n: int,
    context: Mapping[str, ContextValue] | None,
    candidates: Sequence[str] | None,
) -> recommender_pb2.RecommendRequest:
    require_str("user_id", user_id)
    require_str("surface", surface)
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        # On the wire 0 means 1; in the SDK a non-positive n is a mistake.
        raise ValueError(f"n must be >= 1, got {n}")
    request = recommender_pb2.RecommendRequest(
        user_id=user_id, surface=surface, n=n, candidates=_ids("candidates", candidates or ())
    )
    if context:
        request.context.CopyFrom(context_to_proto(context))
    return request


def recommendation_from_proto(response: recommender_pb2.RecommendResponse) -> Recommendation:
    return Recommendation(
        decision_id=response.decision_id,
        items=tuple(
            RecommendedItem(item_id=item.item_id, score=item.score, propensity=item.propensity, slot=item.slot)
            for item in response.items
        ),
        policy=response.policy,
        model_version=response.model_version,
        assignments=assignments_from_proto(response.assignments),
    )


def feedback_event(
    user_id: str,
    item_id: str,
    signal: Signal | str,
    value: float,
    decision_id: str | None,
    surface: str | None,
    *,
    event_id: str | None,
    occurred_at: datetime | None,
) -> FeedbackEvent:
    """The event `record` sends. A missing event_id is drawn here, once, before the first attempt:
    gRPC's retries resend the same serialized request, so they carry the same id."""
    return FeedbackEvent(
        user_id,
        item_id,
        signal,
        value,
        decision_id=decision_id,
        surface=surface,
        event_id=new_event_id() if event_id is None else event_id,
        occurred_at=occurred_at,
    )


def feedback_event_to_proto(event: FeedbackEvent) -> feedback_pb2.FeedbackEvent:
    message = feedback_pb2.FeedbackEvent(
        event_id=event.event_id,
        user_id=event.user_id,
        decision_id=event.decision_id or "",
        item_id=event.item_id,
        surface=event.surface or "",
        signal=Signal.parse(event.signal).value,
        value=event.value,
    )
    if event.occurred_at is not None:
        message.occurred_at.FromDatetime(event.occurred_at)
    return message


def record_batch_request(events: Sequence[FeedbackEvent]) -> feedback_pb2.RecordBatchRequest:
    for index, event in enumerate(events):
        if not isinstance(event, FeedbackEvent):
            raise TypeError(f"events[{index}] must be a FeedbackEvent, got {type(event).__name__}")
    return feedback_pb2.RecordBatchRequest(events=[feedback_event_to_proto(event) for event in events])


def feedback_result_from_record(event: FeedbackEvent, response: feedback_pb2.RecordResponse) -> FeedbackResult:
    return FeedbackResult(
        event_id=event.event_id, duplicate=response.duplicate, reward=response.reward, flag=response.flag
    )


def feedback_results_from_batch(
    events: Sequence[FeedbackEvent], response: feedback_pb2.RecordBatchResponse
) -> list[FeedbackResult]:
    if len(response.results) != len(events):
        raise RewardloopError(
            grpc.StatusCode.INTERNAL,
            f"RecordBatch answered {len(response.results)} results for {len(events)} events",
        )
    return [
        FeedbackResult(
            event_id=event.event_id,
            duplicate=result.duplicate,
            reward=result.reward,
            code=status_code(result.code),
            message=result.message,
            flag=result.flag,
            field=result.field,
        )
        for event, result in zip(events, response.results, strict=True)
    ]


def assign_request(user_id: str, experiments: Sequence[str]) -> assigner_pb2.AssignRequest:
    require_str("user_id", user_id)
    return assigner_pb2.AssignRequest(user_id=user_id, experiments=_ids("experiments", experiments))


def assignments_from_proto(assignments: Iterable[common_pb2.ExperimentAssignment]) -> dict[str, str]:
    return {assignment.experiment: assignment.variant for assignment in assignments}
