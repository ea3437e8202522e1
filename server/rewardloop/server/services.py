"""gRPC servicers: proto in, validated domain call to the owning shard, proto out.

Servicers raise `ServiceError`; `interceptors.RpcObserver` turns it into the status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

import grpc
from opentelemetry import propagate, trace
from ray.exceptions import RayError
from redis.exceptions import RedisError

from rewardloop.learning.experiments import assign_all
from rewardloop.learning.experiments.assigner import SEGMENT_PREFIX
from rewardloop.server import validation
from rewardloop.server.metrics import EXPOSURES, FEEDBACK_EVENTS
from rewardloop.server.routing import ShardRouter
from rewardloop.server.status import ServiceError, not_found, quote, to_service_error, unavailable
from rewardloop.state.experiments import ExperimentCatalog
from rewardloop.state.keys import pseudonymize
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

tracer = trace.get_tracer("rewardloop.server")
log = logging.getLogger(__name__)


def _trace_carrier() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class RecommenderService(recommender_pb2_grpc.RecommenderServicer):
    def __init__(self, config: ServiceConfig, router: ShardRouter, catalog: ExperimentCatalog | None = None):
        self._config = config
        self._router = router
        self._catalog = catalog

    async def Recommend(
        self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendResponse:
        call, context = validation.recommend_call(request, self._config)
        trace.get_current_span().set_attribute("rewardloop.user", call.pseudonym)
        stored: list[tuple[str, str]] = []
        if self._catalog is not None and self._catalog.assigner.covering(call.surface):
            attributes = _attributes(context)
            needed = self._catalog.assigner.segments_needed(request.user_id)
            attributes.update(await segment_attributes(self._router, call.pseudonym, needed))
            stored = self._catalog.assigner.assign(request.user_id, attributes, surface=call.surface)
            # Assigned before deciding: a variant with a policy for the surface decides it (policy experiments).
            call = dataclasses.replace(call, assignments=tuple(stored))
        call = _with_trace(call)
        decision = _unwrap(await self._router.recommend(call))
        assert isinstance(decision, Decision)
        covering = [e for e in self._config.experiments.values() if call.surface in e.surfaces]
        assignments = assign_all(covering, request.user_id)
        if self._catalog is not None:
            self._catalog.traffic.note(call.surface, call.pseudonym)
            await _expose(self._catalog, call.pseudonym, stored)
            assignments += stored
        return recommender_pb2.RecommendResponse(
            decision_id=decision.decision_id,
            items=[
                recommender_pb2.RecommendedItem(item_id=i.item_id, score=i.score, propensity=i.propensity, slot=i.slot)
                for i in decision.items
            ],
            policy=decision.policy,
            model_version=decision.model_version,
            assignments=_assignment_messages(assignments),
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
                results[i] = _event_error(to_service_error(outcome), i)
            else:
                FEEDBACK_EVENTS.labels("duplicate" if outcome.duplicate else "recorded").inc()
                results[i] = feedback_pb2.EventResult(
                    duplicate=outcome.duplicate, reward=outcome.reward, flag=outcome.flag
                )
        return feedback_pb2.RecordBatchResponse(results=[r for r in results if r is not None])


class AssignerService(assigner_pb2_grpc.AssignerServicer):
    """Config-file experiments (their own hashing) and those of the catalogue (sticky buckets)."""

    def __init__(
        self, config: ServiceConfig, catalog: ExperimentCatalog | None = None, router: ShardRouter | None = None
    ):
        self._config = config
        self._catalog = catalog
        self._router = router

    async def Assign(
        self, request: assigner_pb2.AssignRequest, context: grpc.aio.ServicerContext
    ) -> assigner_pb2.AssignResponse:
        validation.check_user_id(request.user_id)
        attributes = _attributes(validation.context_features(request.context))
        names = list(dict.fromkeys(request.experiments))
        wanted = [n for n in names if n not in self._config.experiments]
        for name in wanted:
            if self._catalog is None or not await _exists(self._catalog, name):
                raise not_found(f"experiments[{names.index(name)}]: experiment {quote(name)} does not exist")
        static = [e for n, e in self._config.experiments.items() if not names or n in names]
        assignments = assign_all(static, request.user_id)
        if self._catalog is not None and (wanted or not names):
            pseudonym = pseudonymize(request.user_id, self._config.pseudonym_key.encode())
            needed = self._catalog.assigner.segments_needed(request.user_id)
            attributes.update(await segment_attributes(self._router, pseudonym, needed))
            stored = self._catalog.assigner.assign(request.user_id, attributes, only=wanted)
            await _expose(self._catalog, pseudonym, stored)
            assignments += stored
        return assigner_pb2.AssignResponse(assignments=_assignment_messages(sorted(assignments)))


async def _expose(catalog: ExperimentCatalog, pseudonym: str, assignments: list[tuple[str, str]]) -> None:
    """First exposures are recorded before the answer; with storage down the answer still goes out
    (assignment is pure) and the loss is counted: the user's metrics then go unattributed."""
    if not assignments:
        return
    try:
        first = await catalog.expose(pseudonym, assignments, int(time.time() * 1000))
    except (RedisError, OSError) as exc:
        EXPOSURES.labels("lost").inc(len(assignments))
        log.warning("exposures not recorded: %s", exc)
        return
    EXPOSURES.labels("first").inc(first)
    EXPOSURES.labels("repeat").inc(len(assignments) - first)


async def segment_attributes(router: ShardRouter | None, pseudonym: str, surfaces: Sequence[str]) -> dict[str, str]:
    """``segment.<surface>`` -> the id of the user's most likely segment there, asked of the user's
    shard. A surface with no segments yet, or a shard that does not answer, leaves the attribute
    out (the user then matches only ``ne`` / ``not_in`` conditions on it): assignment never fails."""
    out: dict[str, str] = {}
    if router is None:
        return out
    for surface in surfaces:
        try:
            answer = await router.membership(pseudonym, surface)
        except (ServiceError, RayError, KeyError) as exc:
            log.warning("segment of a user on %s not known: %s", surface, exc)
            continue
        if answer["memberships"]:
            out[SEGMENT_PREFIX + surface] = str(answer["memberships"][0][0])
    return out


async def _exists(catalog: ExperimentCatalog, name: str) -> bool:
    try:
        return await catalog.exists(name)
    except (RedisError, OSError) as exc:
        raise unavailable(f"experiments: storage is unavailable: {exc}") from None


def _attributes(features: Mapping[str, float | str]) -> dict[str, str]:
    """Request context as targeting reads it: numbers as their shortest exact-enough text ("3", "0.1")."""
    return {k: v if isinstance(v, str) else f"{v:.15g}" for k, v in features.items()}


def _assignment_messages(assignments: list[tuple[str, str]]) -> list[common_pb2.ExperimentAssignment]:
    return [common_pb2.ExperimentAssignment(experiment=e, variant=v) for e, v in assignments]


def _with_trace(call: Any) -> Any:
    carrier = _trace_carrier()
    if not carrier:
        return call
    return type(call)(**{**call.__dict__, "trace": carrier})


def _unwrap(result: Any) -> Any:
    if isinstance(result, Rejected):
        raise to_service_error(result)
    return result


def _event_error(exc: ServiceError, index: int) -> feedback_pb2.EventResult:
    error = exc.within(f"events[{index}]")
    field = error.violations[0].field if error.violations else ""
    return feedback_pb2.EventResult(code=error.code.value[0], message=error.message, field=field)
