"""Admin, segments area: the behaviour-based segments each surface learned, and one user's membership.

The segments come straight from their model in Redis (what every shard serves from); a membership
from the user's shard, which computes it from the user's state as it does to decide.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rewardloop.learning.segments.versions import SegmentVersion, decode
from rewardloop.learning.surface import SurfaceConfig
from rewardloop.server import validation
from rewardloop.server.routing import ShardRouter
from rewardloop.server.status import failed_precondition, invalid, quote, unavailable
from rewardloop.state.keys import linear_prior_key, pseudonymize, segment_model_key
from rewardloop.state.segment_priors import (
    CREATED_FIELD,
    MODEL_FIELD,
    PREVIOUS_FIELD,
    STRENGTH_FIELD,
    VERSION_FIELD,
    linear_surfaces,
    segment_surfaces,
)
from rewardloop.v1 import admin_pb2
from rewardloop.workers.config import ServiceConfig

DEFAULT_TOP_ITEMS = 5
MAX_TOP_ITEMS = 100


class SegmentsAdmin:
    """The Admin RPCs of the segments area; `AdminService` mixes it in."""

    _config: ServiceConfig
    _redis_url: str
    _router: ShardRouter | None

    async def ListSegments(
        self, request: admin_pb2.ListSegmentsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListSegmentsResponse:
        surface, linear = self._learned(request.surface)
        top = request.top_items or DEFAULT_TOP_ITEMS
        if top > MAX_TOP_ITEMS:
            raise invalid("top_items", f"must be at most {MAX_TOP_ITEMS}, got {top}")
        try:
            async with aioredis.Redis.from_url(self._redis_url) as redis:
                if linear:
                    key = linear_prior_key(surface.name, surface.fingerprint)
                    number, strength, created = await redis.hmget(key, [VERSION_FIELD, STRENGTH_FIELD, CREATED_FIELD])
                else:
                    current, previous = await redis.hmget(
                        segment_model_key(surface.name, surface.fingerprint), [MODEL_FIELD, PREVIOUS_FIELD]
                    )
        except RedisError as exc:
            raise unavailable(f"storage: {exc}") from None
        if linear:
            if number is None or strength is None:
                return admin_pb2.ListSegmentsResponse(surface=surface.name)
            return admin_pb2.ListSegmentsResponse(
                surface=surface.name,
                version=int(number),
                fitted_at_ms=int(created or 0),
                prior_strength=float(strength),
            )
        version, before = _decoded(current), _decoded(previous)
        if version is None:
            return admin_pb2.ListSegmentsResponse(surface=surface.name)
        return admin_pb2.ListSegmentsResponse(
            surface=surface.name,
            version=version.version,
            fitted_at_ms=version.created_ms,
            segments=_segments(surface, version, before, top),
            previous_version=0 if before is None else before.version,
        )

    async def GetMembership(
        self, request: admin_pb2.GetMembershipRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetMembershipResponse:
        surface, _ = self._learned(request.surface)
        validation.check_user_id(request.user_id)
        assert self._router is not None
        pseudonym = pseudonymize(request.user_id, self._config.pseudonym_key.encode())
        answer = await self._router.membership(pseudonym, surface.name)
        return admin_pb2.GetMembershipResponse(
            surface=surface.name,
            version=answer["version"],
            memberships=[admin_pb2.SegmentProbability(segment_id=i, probability=p) for i, p in answer["memberships"]],
            prior_strength=answer["prior_strength"],
            interactions=answer["interactions"],
        )

    def _learned(self, name: str) -> tuple[SurfaceConfig, bool]:
        """The surface, and whether it learns a linear prior strength (else segments); FAILED_PRECONDITION
        if neither."""
        surface = validation.surface_named(self._config, name)
        alone = {surface.name: surface}
        if surface.name in linear_surfaces(alone):
            return surface, True
        if surface.name not in segment_surfaces(alone):
            raise failed_precondition(
                f"surface {quote(name)} learns no segments (its algorithm {surface.policy_config.name} "
                "takes no count-based prior, or cold_start.segments is off: on by default for thompson only) "
                "and no linear prior strength (linear policies without a configured cold_start.strength)"
            )
        return surface, False


def _decoded(blob: Any) -> SegmentVersion | None:
    if blob is None:
        return None
    try:
        return decode(blob)
    except ValueError:
        return None


def _segments(
    surface: SurfaceConfig, version: SegmentVersion, previous: SegmentVersion | None, top: int
) -> list[admin_pb2.Segment]:
    model = version.model
    population = version.population_means()
    moved = version.moved(previous)
    out = []
    for s, segment_id in enumerate(version.ids):
        lift = model.means[s] / np.maximum(population, 1e-9)
        best = np.argsort(-lift, kind="stable")[:top]
        out.append(
            admin_pb2.Segment(
                id=segment_id,
                share=float(model.weights[s]),
                plays=float(model.plays[s].sum()),
                prior_strength=float(model.strengths[s]),
                top_items=[
                    admin_pb2.SegmentItem(
                        item_id=surface.items[i], mean_reward=float(model.means[s, i]), lift=float(lift[i])
                    )
                    for i in best
                ],
                is_new=moved[s] is None,
                moved=moved[s] or 0.0,
            )
        )
    return out
