"""Ending the server's response streams (health Watch, reflection) when it stops.

Such a stream never ends on its own. grpc.aio's `server.stop(grace)` would wait the
whole grace period for it, then cancel it, and when the event loop closed, log it as
"Exception not handled by _handle_exceptions ... CancelledError" with a traceback (grpc
1.85, measured with a reflection client connected). `OpenStreams.end_all()` ends them at
once instead: each closes with UNAVAILABLE, which tells the client to go elsewhere.

A write the stream has under way when it is ended is finished first (``_Writes``): grpc
refuses the closing status while a message is still being sent ("GRPC_CALL_ERROR_TOO_MANY_
OPERATIONS", seen under load in tests/integration/test_shutdown.py), and the stream then
waits out the grace period to be cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc


class OpenStreams(grpc.aio.ServerInterceptor):
    """Interceptor that keeps track of open response streams, so that they can be ended."""

    def __init__(self) -> None:
        self._open: set[asyncio.Task[Any]] = set()
        self._ending = False

    def end_all(self) -> None:
        """End every open response stream, and any opened from now on."""
        self._ending = True
        for task in self._open:
            task.cancel()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not handler.response_streaming:
            return handler
        behavior = handler.stream_stream if handler.request_streaming else handler.unary_stream
        if not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
            return handler  # a synchronous handler runs in a thread: nothing to cancel here
        wrap = (
            grpc.stream_stream_rpc_method_handler if handler.request_streaming else grpc.unary_stream_rpc_method_handler
        )
        return wrap(self._ended_at_stop(behavior), handler.request_deserializer, handler.response_serializer)

    def _ended_at_stop(
        self, behavior: Callable[..., Any]
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]:
        # A coroutine that writes (grpc's reader-writer form), whichever form `behavior` has.
        async def ended_at_stop(request: Any, context: grpc.aio.ServicerContext) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._open.add(task)
            writes = _Writes(context)
            try:
                if self._ending:
                    pass
                elif inspect.isasyncgenfunction(behavior):
                    async for response in behavior(request, writes):
                        await writes.write(response)
                else:
                    await behavior(request, writes)
            except asyncio.CancelledError:
                if not self._ending:
                    raise  # the client went away
                task.uncancel()  # ours: the stream ends normally, with the status below
                await writes.finished()
            finally:
                self._open.discard(task)
            if self._ending:
                context.set_code(grpc.StatusCode.UNAVAILABLE)
                context.set_details("the server is stopping")

        return ended_at_stop


class _Writes:
    """A stream's context whose writes carry on when the stream's task is cancelled, so that the
    stream can end once the write under way has (``finished``); everything else is the context's."""

    def __init__(self, context: grpc.aio.ServicerContext):
        self._context = context
        self._pending: asyncio.Future[None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def write(self, message: Any) -> None:
        self._pending = asyncio.ensure_future(self._context.write(message))
        # Its failure is read here too: a client that cancels leaves the write to fail unawaited.
        self._pending.add_done_callback(lambda f: f.cancelled() or f.exception())
        await asyncio.shield(self._pending)

    async def finished(self) -> None:
        """Wait for the write under way, if any (its failure is the stream's end anyway)."""
        if self._pending is not None:
            with contextlib.suppress(Exception):
                await self._pending
