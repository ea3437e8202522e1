"""The Admin service: one mixin per area, each in a module of its own.

A new admin area is one new module with one mixin class, added to `AdminService`'s bases; the
mixins read the configuration and the Redis URL this class holds.
"""

from __future__ import annotations

from rewardloop.server.admin.evaluation import EvaluationAdmin
from rewardloop.server.admin.experiment_results import ExperimentResultsAdmin
from rewardloop.server.admin.experiments import ExperimentsAdmin
from rewardloop.server.admin.segments import SegmentsAdmin
from rewardloop.server.routing import ShardRouter
from rewardloop.v1 import admin_pb2_grpc
from rewardloop.workers.config import ServiceConfig


class AdminService(
    EvaluationAdmin, ExperimentsAdmin, ExperimentResultsAdmin, SegmentsAdmin, admin_pb2_grpc.AdminServicer
):
    def __init__(self, config: ServiceConfig, redis_url: str, router: ShardRouter | None = None):
        self._config = config
        self._redis_url = redis_url
        self._router = router
