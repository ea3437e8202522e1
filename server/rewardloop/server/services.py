"""gRPC servicers: proto in, validated domain call to the owning shard, proto out.

Status mapping happens in one place (`RpcObserver`); servicers raise `ServiceError`.
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
from opentelemetry import propagate, trace

from rewardloop.learning.experiments import assign_all
from rewardloop.server import validation
from rewardloop.server.errors import ServiceError, from_status_name, internal, invalid, not_found, quote
from rewardloop.server.metrics import FEEDBACK_EVENTS, RPC_LATENCY, RPC_TOTAL
from rewardloop.server.routing import ShardRouter
from rewardloop.v1 import (
    assigner_pb2,
    assigner_pb2_grpc,
    common_pb2,
    feedback_pb2,
    feedback_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
)
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.messages import Decision, Recorded, Rejected

log = logging.getLogger(__name__)
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
tracer = trace.get_tracer("rewardloop.server")


def _trace_carrier() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class RecommenderService(recommender_pb2_grpc.RecommenderServicer):
    def __init__(self, config: ServiceConfig, router: ShardRouter):
        self._config = config
        self._router = router

    async def Recommend(
        self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendResponse:
        call = validation.recommend_call(request, self._config)
        trace.get_current_span().set_attribute("rewardloop.user", call.pseudonym)
        call = _with_trace(call)
        decision = _unwrap(await self._router.recommend(call))
        assert isinstance(decision, Decision)
        covering = [e for e in self._config.experiments.values() if call.surface in e.surfaces]
        return recommender_pb2.RecommendResponse(
            decision_id=decision.decision_id,
            items=[
                recommender_pb2.RecommendedItem(item_id=i.item_id, score=i.score, propensity=i.propensity, slot=i.slot)
                for i in decision.items
            ],
            policy=decision.policy,
            model_version=decision.model_version,
            assignments=_assignments(covering, request.user_id),
        )


class FeedbackService(feedback_pb2_grpc.FeedbackServicer):
    def __init__(self, config: ServiceConfig, router: ShardRouter):
        self._config = config
        self._router = router

    async def Record(
        self, request: feedback_pb2.FeedbackEvent, context: grpc.aio.ServicerContext
    ) -> feedback_pb2.RecordResponse:
        call = validation.feedback_call(request, self._config)
        trace.get_current_span().set_attribute("rewardloop.user", call.pseudonym)
        recorded = _unwrap(await self._router.feedback(_with_trace(call)))
        assert isinstance(recorded, Recorded)
        FEEDBACK_EVENTS.labels("duplicate" if recorded.duplicate else "recorded").inc()
        return feedback_pb2.RecordResponse(duplicate=recorded.duplicate, reward=recorded.reward, flag=recorded.flag)

    async def RecordBatch(
        self, request: feedback_pb2.RecordBatchRequest, context: grpc.aio.ServicerContext
    ) -> feedback_pb2.RecordBatchResponse:
        validation.batch_size(len(request.events))
        now_ms = int(time.time() * 1000)
        results: list[feedback_pb2.EventResult | None] = [None] * len(request.events)
        pending: list[tuple[int, Awaitable[Recorded | Rejected]]] = []
        for i, event in enumerate(request.events):
            try:
                call = validation.feedback_call(event, self._config, now_ms)
            except ServiceError as exc:
                results[i] = _event_error(exc, i)
                continue
            pending.append((i, self._router.feedback(_with_trace(call))))
        # A storage failure fails the whole call (UNAVAILABLE): the caller retries the
        # batch and events already recorded come back as duplicates.
        outcomes = await asyncio.gather(*(p for _, p in pending))
        for (i, _), outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, Rejected):
                results[i] = _event_error(from_status_name(outcome.code, outcome.message, outcome.field), i)
            else:
                FEEDBACK_EVENTS.labels("duplicate" if outcome.duplicate else "recorded").inc()
                results[i] = feedback_pb2.EventResult(
                    duplicate=outcome.duplicate, reward=outcome.reward, flag=outcome.flag
                )
        return feedback_pb2.RecordBatchResponse(results=[r for r in results if r is not None])


class AssignerService(assigner_pb2_grpc.AssignerServicer):
    def __init__(self, config: ServiceConfig):
        self._config = config

    async def Assign(
        self, request: assigner_pb2.AssignRequest, context: grpc.aio.ServicerContext
    ) -> assigner_pb2.AssignResponse:
        validation.check_user_id(request.user_id)
        names = list(request.experiments) or list(self._config.experiments)
        for name in names:
            if name not in self._config.experiments:
                raise not_found(f"experiments: experiment {quote(name)} is not configured")
        chosen = [self._config.experiments[n] for n in dict.fromkeys(names)]
        return assigner_pb2.AssignResponse(assignments=_assignments(chosen, request.user_id))


def _assignments(experiments: list[Any], user_id: str) -> list[common_pb2.ExperimentAssignment]:
    return [common_pb2.ExperimentAssignment(experiment=e, variant=v) for e, v in assign_all(experiments, user_id)]


def _with_trace(call: Any) -> Any:
    carrier = _trace_carrier()
    if not carrier:
        return call
    return type(call)(**{**call.__dict__, "trace": carrier})


def _unwrap(result: Any) -> Any:
    if isinstance(result, Rejected):
        raise from_status_name(result.code, result.message, result.field)
    return result


def _event_error(exc: ServiceError, index: int) -> feedback_pb2.EventResult:
    error = exc.within(f"events[{index}]")
    field = error.violations[0].field if error.violations else ""
    return feedback_pb2.EventResult(code=error.code.value[0], message=error.message, field=field)


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
            except ServiceError as exc:
                code = exc.code
                await _abort(context, exc)
            except TimeoutError:
                code = grpc.StatusCode.DEADLINE_EXCEEDED
                await context.abort(code, "deadline exceeded", _trailers())
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):  # abort() above, already mapped
                    raise
                # A bug of ours: the traceback goes to our log, never to the caller.
                code = grpc.StatusCode.INTERNAL
                log.exception("%s failed (request id %s)", method, request_id.get())
                await _abort(context, internal(request_id.get()))
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
    """The one place a `ServiceError` becomes a status: code, message and google.rpc.Status details."""
    await context.abort(error.code, error.message, (*_trailers(), *error.trailing_metadata()))


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
                return _deny(grpc.StatusCode.PERMISSION_DENIED, "authorization: this key may not call Admin")
        elif presented in self._tokens or presented in self._admin:
            return await continuation(details)
        return _deny(grpc.StatusCode.UNAUTHENTICATED, "authorization: a valid bearer token is required")


ADMIN_PREFIX = "/rewardloop.v1.Admin/"


def _deny(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(deny)
