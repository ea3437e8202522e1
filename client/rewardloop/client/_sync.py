"""`Client`: the blocking SDK client over a `grpc.Channel`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import grpc

from rewardloop.client import _convert
from rewardloop.client._config import DEFAULT_TIMEOUT, ChannelOptions, Connection, Metadata
from rewardloop.client.errors import from_rpc_error
from rewardloop.client.types import FeedbackEvent, FeedbackResult, Recommendation, Signal


class Client:
    """Blocking client for the rewardloop Recommender, Feedback and Assigner services.

    Build it from a `target` ("localhost:50051"; plain-text unless `credentials` are given) or from
    an existing `channel` (then build that channel with `channel_options()` to keep the retry
    policy; the client does not close a channel it did not open).

    Every call has a deadline: its `timeout` argument, else `default_timeout` seconds; retries of
    UNAVAILABLE happen inside it. `metadata` (e.g. `{"authorization": "Bearer <token>"}`) is sent
    with every call. Failures raise `RewardloopError` subclasses carrying the gRPC status.

        with Client("localhost:50051") as client:
            rec = client.recommend("user-1", "home_feed", n=3, context={"device": "ios"})
            client.record("user-1", rec.item_ids[0], "click", decision_id=rec.decision_id)
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        channel: grpc.Channel | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Metadata | None = None,
        default_timeout: float = DEFAULT_TIMEOUT,
        options: ChannelOptions = (),
    ) -> None:
        self._connection = Connection.open(
            grpc,
            grpc.Channel,
            target=target,
            channel=channel,
            credentials=credentials,
            metadata=metadata,
            default_timeout=default_timeout,
            options=options,
        )

    def _unary(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        kwargs = self._connection.settings.call_kwargs(timeout)
        try:
            return method(request, **kwargs)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err

    def recommend(
        self,
        user_id: str,
        surface: str,
        *,
        n: int = 1,
        context: Mapping[str, float | int | str | bool] | None = None,
        candidates: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> Recommendation:
        """Choose `n` items of `surface` for `user_id`.

        `context` maps feature names to numbers (bools count as 0/1) or strings (categorical);
        `candidates` restricts the choice to these item ids (default: the whole catalogue).
        Raises `NotFound` for an unknown surface, `InvalidArgument` for a malformed field.
        """
        request = _convert.recommend_request(user_id, surface, n=n, context=context, candidates=candidates)
        return _convert.recommendation_from_proto(self._unary(self._connection.stubs.recommend, request, timeout))

    def record(
        self,
        user_id: str,
        item_id: str,
        signal: Signal | str,
        value: float = 1.0,
        *,
        decision_id: str | None = None,
        surface: str | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
        timeout: float | None = None,
    ) -> FeedbackResult:
        """Record what `user_id` did with `item_id`; returns once the event is durable.

        `signal` is a `Signal` or its name ("click"); see `Signal` for `value`'s unit. Give
        `decision_id` (from `recommend`) or `surface`. Without `event_id` a random one is drawn
        before the first attempt, so automatic retries are counted once; it is returned in the
        result. After `DeadlineExceeded` the event may have been recorded: retry with that same
        `event_id` (the result then says `duplicate`).
        """
        event = _convert.feedback_event(
            user_id, item_id, signal, value, decision_id, surface, event_id=event_id, occurred_at=occurred_at
        )
        response = self._unary(self._connection.stubs.record, _convert.feedback_event_to_proto(event), timeout)
        return _convert.feedback_result_from_record(event, response)

    def record_batch(self, events: Sequence[FeedbackEvent], *, timeout: float | None = None) -> list[FeedbackResult]:
        """Record up to 1000 events in one call; one result per event, in order.

        A rejected event is a result with `ok` False (see `FeedbackResult.error`), not an
        exception; the call raises only when the batch as a whole fails. An empty batch returns []
        without a call.
        """
        if not events:
            return []
        request = _convert.record_batch_request(events)
        response = self._unary(self._connection.stubs.record_batch, request, timeout)
        return _convert.feedback_results_from_batch(events, response)

    def assign(self, user_id: str, experiments: Sequence[str] = (), *, timeout: float | None = None) -> dict[str, str]:
        """The user's variant per experiment (all running experiments when `experiments` is empty).

        A user outside an experiment's traffic share is absent from the result.
        """
        request = _convert.assign_request(user_id, experiments)
        response = self._unary(self._connection.stubs.assign, request, timeout)
        return _convert.assignments_from_proto(response.assignments)

    def close(self) -> None:
        """Close the channel if this client opened it. Idempotent."""
        if self._connection.owns_channel:
            self._connection.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
