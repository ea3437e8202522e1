"""Assembling the service: shards on Ray, the gRPC front, health and reflection.

`create_server` builds the gRPC server around a router (tests bind port 0);
`Service` owns the whole lifecycle and is what `python -m rewardloop.server`, the
integration tests, the benchmarks and the demo start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from redis.exceptions import RedisError

from rewardloop.server.admin import AdminService
from rewardloop.server.interceptors import RpcObserver, TokenAuth
from rewardloop.server.metrics import (
    EXPERIMENTS,
    EXPOSURE_CACHE,
    MONITOR_ACTIONS,
    REDIS_STATS,
    TRAINER_STATS,
    publish_heap,
)
from rewardloop.server.routing import ShardRouter
from rewardloop.server.services import AssignerService, FeedbackService, RecommenderService
from rewardloop.server.streams import OpenStreams
from rewardloop.state.experiments import ExperimentCatalog
from rewardloop.state.store import check_no_eviction
from rewardloop.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    assigner_pb2,
    assigner_pb2_grpc,
    feedback_pb2,
    feedback_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
)
from rewardloop.workers.cluster import (
    create_fitter,
    create_shards,
    start_agents,
    stop_agents,
    stop_fitter,
    stop_shards,
    wait_ready,
)
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.experiment_monitor import MONITOR_SECONDS, ExperimentMonitor
from rewardloop.workers.heap import Heap
from rewardloop.workers.tracing import tracing_on

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    recommender_pb2.DESCRIPTOR.services_by_name["Recommender"].full_name,
    feedback_pb2.DESCRIPTOR.services_by_name["Feedback"].full_name,
    assigner_pb2.DESCRIPTOR.services_by_name["Assigner"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
)
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# How often the shards' holdings are sampled into the metrics.
STATS_SECONDS = 5.0


def _ours(details: grpc.HandlerCallDetails) -> bool:
    """Whether a call is to one of our services (the ones traced). Not OpenTelemetry's
    ``filters.service_name``: it checks ``isinstance`` against grpc's runtime-checkable
    ``HandlerCallDetails`` protocol, ~25 us a check, several per call (bench/recommend.py --profile)."""
    return str(details.method).startswith("/rewardloop.v1.")


def create_server(
    address: str,
    config: ServiceConfig,
    router: ShardRouter,
    redis_url: str,
    auth_tokens: Sequence[str] = (),
    admin_tokens: Sequence[str] = (),
    streams: OpenStreams | None = None,
    catalog: ExperimentCatalog | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """The gRPC server, bound but not started; port 0 picks a free port.

    With no tokens at all the API is open (a laptop); with any, every call needs one.
    `streams`, if given, can end the server's open response streams at stop; `catalog`, if
    given, is the stored experiments Assign and Recommend assign (else only the config file's).
    """
    # Traces for our (unary) services only: OpenTelemetry's aio interceptor breaks the
    # streaming ones. A reflection client that cancels its stream makes it log "Failed to
    # detach context" with a traceback (asyncio's finalizer closes the abandoned generator
    # in another context than the one it attached in), and health Watch fails with UNKNOWN
    # (the interceptor iterates Watch as an async generator; it is a coroutine).
    # Without an exporter (traces off) spans would go nowhere: no interceptor, no cost.
    interceptors: list[grpc.aio.ServerInterceptor] = [] if streams is None else [streams]
    if tracing_on():
        interceptors.append(aio_server_interceptor(filter_=_ours))
    if auth_tokens or admin_tokens:
        interceptors.append(TokenAuth(set(auth_tokens), set(admin_tokens)))
    interceptors.append(RpcObserver())
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    recommender_pb2_grpc.add_RecommenderServicer_to_server(RecommenderService(config, router, catalog), server)
    feedback_pb2_grpc.add_FeedbackServicer_to_server(FeedbackService(config, router), server)
    assigner_pb2_grpc.add_AssignerServicer_to_server(AssignerService(config, catalog, router), server)
    admin_pb2_grpc.add_AdminServicer_to_server(AdminService(config, redis_url, router), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind {address}")
    return server, port, health_servicer


async def _sample_trainers(trainers: list[Any]) -> None:
    """Each trainer's progress into the gauges; asking also restarts a trainer's loop after Ray
    restarted its actor (``HostedTrainer.status``). A trainer that does not answer keeps its values."""
    results = await asyncio.gather(*(t.status.remote() for t in trainers), return_exceptions=True)
    for status in results:
        if isinstance(status, BaseException):
            log.warning("trainer status failed: %s", status)
            continue
        for name, gauge in TRAINER_STATS.items():
            gauge.labels(surface=str(status["surface"])).set(float(status[name]))


async def _sample_redis(client: aioredis.Redis) -> None:
    """Redis's memory and keys into the front's gauges; a Redis that does not answer keeps the last values."""
    try:
        memory: Any = await client.info("memory")
        keys = await client.dbsize()
    except RedisError:
        return
    REDIS_STATS["used_memory"].set(memory.get("used_memory", 0))
    REDIS_STATS["maxmemory"].set(memory.get("maxmemory", 0))
    REDIS_STATS["keys"].set(keys)


class Service:
    """Shards + front. Ray must be initialised and Redis reachable at `redis_url`."""

    def __init__(
        self,
        config: ServiceConfig,
        redis_url: str,
        address: str = "localhost:50051",
        traces: str = "",
        auth_tokens: Sequence[str] = (),
        shard_prefix: str = "shard",
        admin_tokens: Sequence[str] = (),
        heap: Heap | None = None,
        monitor_seconds: float = MONITOR_SECONDS,
    ):
        self.config = config
        # The front process's collector (workers/heap.py), published with the shards' stats; None
        # in a process that is not only the front (tests).
        self.heap = heap
        self.redis_url = redis_url
        self.address = address
        self.traces = traces
        self.auth_tokens = tuple(auth_tokens)
        self.admin_tokens = tuple(admin_tokens)
        self.shard_prefix = shard_prefix
        self.port = 0
        self.actors: list[Any] = []
        self.fitter: Any = None
        self.trainers: list[Any] = []
        self.router: ShardRouter | None = None
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._streams = OpenStreams()
        self._sampler: asyncio.Task[None] | None = None
        self.catalog: ExperimentCatalog | None = None
        self.monitor: ExperimentMonitor | None = None
        self.monitor_seconds = monitor_seconds

    @property
    def target(self) -> str:
        host = self.address.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def start(self) -> Service:
        await check_no_eviction(self.redis_url)
        # The shards', the fitter's and the trainers' processes start while the agent surfaces' policy
        # replicas deploy (each process spends seconds importing); the first decisions, which ask
        # the replicas, come only once the gRPC server opens, after all of them answered.
        self.actors = create_shards(self.config, self.redis_url, self.traces, self.shard_prefix)
        self.fitter = create_fitter(self.config, self.redis_url, self.shard_prefix)
        self.trainers = await asyncio.to_thread(start_agents, self.config, self.redis_url)
        await asyncio.to_thread(wait_ready, [*self.trainers, *self.actors, self.fitter])
        self.router = ShardRouter(self.actors)
        self._streams = OpenStreams()
        self.catalog = await ExperimentCatalog(self.redis_url).start()
        self._server, self.port, self._health = create_server(
            self.address,
            self.config,
            self.router,
            self.redis_url,
            self.auth_tokens,
            self.admin_tokens,
            self._streams,
            self.catalog,
        )
        await self._server.start()
        self.monitor = await ExperimentMonitor(self.redis_url, self.monitor_seconds).start()
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._sampler = asyncio.get_running_loop().create_task(self._sample_stats_forever())
        log.info("rewardloop serving on %s with %d shards", self.target, len(self.actors))
        return self

    async def _sample_stats_forever(self) -> None:
        client = aioredis.Redis.from_url(self.redis_url)
        try:
            while self.router is not None:
                await self.router.sample_stats()
                await _sample_trainers(self.trainers)
                if self.catalog is not None:
                    for status, count in self.catalog.counts().items():
                        EXPERIMENTS.labels(status).set(count)
                    EXPOSURE_CACHE.set(len(self.catalog.exposed))
                if self.monitor is not None:
                    for action, count in (*self.monitor.actions.items(), ("looks", self.monitor.looks)):
                        MONITOR_ACTIONS.labels(action).set(count)
                if self.heap is not None:
                    publish_heap("front", self.heap.stats())
                await _sample_redis(client)
                await asyncio.sleep(STATS_SECONDS)
        finally:
            await client.aclose()

    async def stop(self, grace: float = 5.0, flush: bool = True) -> None:
        """Graceful: NOT_SERVING, end the response streams (health Watch, reflection), drain
        the other RPCs for `grace` seconds, snapshot, end shards.

        `flush=False` skips the snapshot: what a crash of the whole service looks like
        to Redis (tests use it to prove recovery from the logs alone).
        """
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        self._streams.end_all()
        if self._server is not None:
            await self._server.stop(grace)
        if self.monitor is not None:
            await self.monitor.stop()
            self.monitor = None
        if self.catalog is not None:
            await self.catalog.stop()
            self.catalog = None
        if self.router is not None:
            await self.router.close()
        if self.actors:
            stop_shards(self.actors, flush=flush)
        if self.fitter is not None:
            stop_fitter(self.fitter)
            self.fitter = None
        stop_agents(self.config, self.trainers)
        self.trainers = []
        self._server, self._health, self.actors, self.router = None, None, [], None
