"""What every RPC goes through before and after its servicer: auth, request id, deadline, status.

`RpcObserver` gives each call a request id, enforces the remaining deadline, records latency
and throughput, and turns whatever the handler raised into the caller's status through
`status.to_service_error` (a bug: logged here, answered INTERNAL with the request id).
`TokenAuth` checks bearer tokens. A body that does not parse reaches no servicer: it
deserializes to `_Undecodable` and is answered INVALID_ARGUMENT (grpc would say UNKNOWN).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from collections.abc import Set as AbstractSet
from typing import Any

import grpc

from rewardloop.server.metrics import RPC_LATENCY, RPC_TOTAL
from rewardloop.server.status import (
    ServiceError,
    internal,
    invalid,
    permission_denied,
    to_service_error,
    unauthenticated,
)

log = logging.getLogger(__name__)
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
ADMIN_PREFIX = "/rewardloop.v1.Admin/"


class _Undecodable:
    """What a request body that does not parse deserializes to: the handler answers
    INVALID_ARGUMENT instead of grpc's UNKNOWN ("Unexpected <class 'DecodeError'>")."""

    def __init__(self, message_type: str):
        self.message_type = message_type


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None
    message_type = getattr(getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None), "full_name", "")

    def parse(body: bytes) -> Any:
        try:
            return deserialize(body)
        except Exception:  # DecodeError, invalid UTF-8, nesting too deep, ...
            return _Undecodable(message_type or "the method's request type")

    return parse


def _check_decoded(request: Any) -> None:
    if isinstance(request, _Undecodable):
        raise invalid("request", f"the body does not parse as {request.message_type}")


class RpcObserver(grpc.aio.ServerInterceptor):
    """Per unary RPC: request id, latency/throughput metrics, errors -> status codes,
    the remaining deadline enforced around the handler."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        if not details.method.startswith("/rewardloop."):  # health: only bodies that do not parse

            async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, _Undecodable):
                    await _abort(context, invalid("request", f"the body does not parse as {request.message_type}"))
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                checked, _tolerant(handler.request_deserializer), handler.response_serializer
            )
        method = details.method.rsplit("/", 1)[-1]
        incoming = dict(details.invocation_metadata or ())

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            request_id.set(str(incoming.get("x-request-id") or uuid.uuid4().hex)[:64])
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                _check_decoded(request)
                return await asyncio.wait_for(inner(request, context), timeout=remaining)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:  # abort() below, already mapped
                raise
            except Exception as exc:
                error = to_service_error(exc)
                if error is None:
                    # A bug of ours: the traceback goes to our log, never to the caller.
                    log.exception("%s failed (request id %s)", method, request_id.get())
                    error = internal(request_id.get())
                code = error.code
                await _abort(context, error)
            finally:
                context.set_trailing_metadata(_trailers())
                RPC_LATENCY.labels(method, code.name).observe(time.perf_counter() - start)
                RPC_TOTAL.labels(method, code.name).inc()

        return grpc.unary_unary_rpc_method_handler(
            observed, _tolerant(handler.request_deserializer), handler.response_serializer
        )


def _trailers() -> tuple[tuple[str, str | bytes], ...]:
    return (("x-request-id", request_id.get()),)


async def _abort(context: grpc.aio.ServicerContext, error: ServiceError) -> None:
    """The one place a `ServiceError` becomes a status: code, message and google.rpc.Status details.

    A missed deadline has no details to give and answers with the request id alone, as it
    always has (the caller's own deadline usually reports it first anyway).
    """
    details = () if error.code is grpc.StatusCode.DEADLINE_EXCEEDED else error.trailing_metadata()
    await context.abort(error.code, error.message, (*_trailers(), *details))


class TokenAuth(grpc.aio.ServerInterceptor):
    """Bearer-token check for the rewardloop services (health and reflection stay open).

    API keys may call Recommend, Feedback and Assign; the Admin service needs an admin key
    (a valid API key there gets PERMISSION_DENIED). The seam for real auth: swap in mTLS
    identities or JWT verification here.
    """

    def __init__(self, tokens: AbstractSet[str], admin_tokens: AbstractSet[str] = frozenset()):
        self._tokens = {f"Bearer {t}" for t in tokens}
        self._admin = {f"Bearer {t}" for t in admin_tokens}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if not details.method.startswith("/rewardloop."):
            return await continuation(details)
        presented = dict(details.invocation_metadata or ()).get("authorization")
        if details.method.startswith(ADMIN_PREFIX):
            if presented in self._admin:
                return await continuation(details)
            if presented in self._tokens:
                return _deny(permission_denied("authorization: this key may not call Admin"))
        elif presented in self._tokens or presented in self._admin:
            return await continuation(details)
        return _deny(unauthenticated("authorization: a valid bearer token is required"))


def _deny(error: ServiceError) -> grpc.RpcMethodHandler:
    """A handler that refuses the call; code and message only (no request id yet, no details)."""

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(error.code, error.message)

    return grpc.unary_unary_rpc_method_handler(deny)
