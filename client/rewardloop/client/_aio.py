"""`AsyncClient`: the asyncio SDK client over a `grpc.aio.Channel`; same surface as `Client`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio

from rewardloop.client import _convert
from rewardloop.client._config import DEFAULT_TIMEOUT, ChannelOptions, Connection, Metadata
from rewardloop.client.errors import from_rpc_error
from rewardloop.client.types import FeedbackEvent, FeedbackResult, Recommendation, Signal


class AsyncClient:
    """Asyncio client; see `Client` for construction, deadlines, retries and errors.

    Create it inside a running event loop (grpc.aio binds the channel to it):

        async with AsyncClient("localhost:50051") as client:
            rec = await client.recommend("user-1", "home_feed", n=3)
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        channel: grpc.aio.Channel | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Metadata | None = None,
        default_timeout: float = DEFAULT_TIMEOUT,
        options: ChannelOptions = (),
    ) -> None:
        self._connection = Connection.open(
            grpc.aio,
            grpc.aio.Channel,
            target=target,
            channel=channel,
            credentials=credentials,
            metadata=metadata,
            default_timeout=default_timeout,
            options=options,
        )

    async def _unary(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        kwargs = self._connection.settings.call_kwargs(timeout)
        try:
            return await method(request, **kwargs)
        except grpc.RpcError as err:  # grpc.aio.AioRpcError is a grpc.RpcError
            raise from_rpc_error(err) from err

    async def recommend(
        self,
        user_id: str,
        surface: str,
        *,
        n: int = 1,
        context: Mapping[str, float | int | str | bool] | None = None,
        candidates: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> Recommendation:
        """See `Client.recommend`."""
        request = _convert.recommend_request(user_id, surface, n=n, context=context, candidates=candidates)
        response = await self._unary(self._connection.stubs.recommend, request, timeout)
        return _convert.recommendation_from_proto(response)

    async def record(
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
        """See `Client.record`."""
        event = _convert.feedback_event(
            user_id, item_id, signal, value, decision_id, surface, event_id=event_id, occurred_at=occurred_at
        )
        request = _convert.feedback_event_to_proto(event)
        return _convert.feedback_result_from_record(
            event, await self._unary(self._connection.stubs.record, request, timeout)
        )

    async def record_batch(
        self, events: Sequence[FeedbackEvent], *, timeout: float | None = None
    ) -> list[FeedbackResult]:
        """See `Client.record_batch`."""
        if not events:
            return []
        request = _convert.record_batch_request(events)
        return _convert.feedback_results_from_batch(
            events, await self._unary(self._connection.stubs.record_batch, request, timeout)
        )

    async def assign(
        self, user_id: str, experiments: Sequence[str] = (), *, timeout: float | None = None
    ) -> dict[str, str]:
        """See `Client.assign`."""
        request = _convert.assign_request(user_id, experiments)
        response = await self._unary(self._connection.stubs.assign, request, timeout)
        return _convert.assignments_from_proto(response.assignments)

    async def close(self) -> None:
        """Close the channel if this client opened it. Idempotent."""
        if self._connection.owns_channel:
            await self._connection.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
