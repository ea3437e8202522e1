"""Hosting the shards as Ray actors.

Each shard is a named async actor that Ray restarts after a crash (`max_restarts=-1`);
a restarted shard starts empty and rebuilds each user from Redis on first touch, so a
crash loses nothing that was acknowledged. Calls in flight when a shard dies fail (the
front answers UNAVAILABLE) instead of being retried by Ray, because only the caller
knows whether to retry; Feedback retries are safe thanks to event ids.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import ray

from rewardloop.workers.agents import ServePolicy, app_name
from rewardloop.workers.channel import ChannelServer, Endpoint
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.heap import FREEZE_SECONDS, Heap
from rewardloop.workers.segments import SegmentFitter
from rewardloop.workers.shard import ShardCore
from rewardloop.workers.tracing import configure_tracing

NAMESPACE = "rewardloop"
log = logging.getLogger(__name__)


def serve_at_full_priority() -> None:
    """Have the local Ray about to start run its workers (our shards) at the front's priority.

    Ray starts workers at nice 15, as batch work behind the driver. Ours serve requests: on a 2-core
    box under load they then wait behind the front, Redis and the load for hundreds of ms at a time
    (measured by bench/soak.py: 20% less throughput at nice 15). Call it before ``ray.init``; a
    cluster we only join (KubeRay) sets ``RAY_worker_niceness`` in its own pod spec.
    """
    os.environ.setdefault("RAY_worker_niceness", "0")


class HostedShard(ShardCore):
    def __init__(self, config: ServiceConfig, redis_url: str, shard_index: int, traces: str = ""):
        configure_tracing(traces, service_name=f"rewardloop-shard-{shard_index}")
        # Agent surfaces ask their policy's Serve replicas (``start_agents``).
        super().__init__(config, redis_url, shard_index, policy_source=lambda s: ServePolicy(s.name))
        # Freeze what the worker holds once started, then every few seconds what survived (heap.py:
        # no garbage-collection pause grows with the users held).
        self.heap = Heap()
        self.heap.start(every=FREEZE_SECONDS)
        # Recommend and Feedback batches come over a socket of the shard's own (channel.py).
        self.channel = ChannelServer({"recommend": self.recommend, "feedback": self.feedback})

    async def endpoint(self, front_node: str) -> Endpoint:
        """Where the front at node address ``front_node`` reaches this shard's channel: 127.0.0.1
        from the shard's own node, else the node's address; and the token to present."""
        node = ray.util.get_node_ip_address()
        host = "127.0.0.1" if front_node == node else node
        return host, await self.channel.listen(host), self.channel.token

    def stats(self) -> dict[str, float]:
        return {**super().stats(), **self.heap.stats()}


ShardActor: Any = ray.remote(HostedShard)


class HostedFitter(SegmentFitter):
    async def ready(self) -> None:
        """Start fitting (on the actor's own event loop), once the actor answers."""
        self.start()

    async def fit_now(self) -> dict[str, int]:
        """Fit now (tests and benchmarks); the current version of every surface with segments."""
        return await self.fit()


FitterActor: Any = ray.remote(HostedFitter)


class HostedTrainer:
    """An agent surface's trainer (``workers/trainer.py``) on its own actor: learns as transitions
    arrive, checkpoints on schedule. Restarted by Ray after a crash, it resumes from its checkpoint."""

    def __init__(
        self,
        redis_url: str,
        surface: str,
        algorithm: str,
        config: dict[str, Any],
        checkpoint_every: int = 500,
        checkpoint_seconds: float = 10.0,
    ):
        # torch only in this actor's process, not in every process that hosts shards.
        import redis.asyncio as aioredis
        import torch

        from rewardloop.workers.trainer import Trainer, new_agent_from

        torch.set_num_threads(1)
        self.checkpoint_seconds = checkpoint_seconds
        self.redis = aioredis.Redis.from_url(redis_url)
        self.trainer = Trainer(
            self.redis, surface, new_agent_from(algorithm, config), checkpoint_every=checkpoint_every
        )
        self.task: asyncio.Task[None] | None = None

    async def ready(self) -> None:
        if self.task is None:
            await self.trainer.start()
            self.task = asyncio.get_running_loop().create_task(
                self.trainer.run(checkpoint_seconds=self.checkpoint_seconds)
            )

    async def status(self) -> dict[str, int | str]:
        """Where training stands (and the stream's length); also (re)starts the loop, so the first
        call after Ray restarted the actor resumes from the checkpoint: the front calls it every few
        seconds (its stats sampler), which makes it the trainer's watchdog."""
        if self.task is None:
            await self.ready()
        elif self.task.done():
            self.task.result()  # the loop died: say why
        entries = await self.trainer.log.length()
        return {**self.trainer.status(), "surface": self.trainer.surface, "stream_entries": entries}

    async def checkpoint_now(self) -> int:
        return await self.trainer.checkpoint()


TrainerActor: Any = ray.remote(HostedTrainer)


def create_trainer(redis_url: str, surface: str, algorithm: str, config: dict[str, Any], **options: Any) -> Any:
    """Create (or reuse, by name) a surface's trainer, restarted by Ray after a crash; ``wait_ready``
    starts it."""
    return TrainerActor.options(
        name=f"trainer-{surface}", namespace=NAMESPACE, get_if_exists=True, max_restarts=-1,
        max_task_retries=0, num_cpus=0, enable_task_events=False,
    ).remote(redis_url, surface, algorithm, config, **options)  # fmt: skip


def start_agents(config: ServiceConfig, redis_url: str) -> list[Any]:
    """For each agent surface, its trainer and its policy replicas on Ray Serve (an application per
    surface, no HTTP or gRPC proxy: the shards call it through handles). Returns once the replicas
    serve, with the trainers created: ``wait_ready`` starts them (their processes start meanwhile)."""
    surfaces = [s for s in config.surfaces.values() if s.kind == "agent"]
    if not surfaces:
        return []
    from ray import serve

    from rewardloop.workers.policy_replicas import deployment

    learners = [s.spec.learner_dict(s.context_dim, len(s.items)) for s in surfaces]
    trainers = []
    for surface, learner in zip(surfaces, learners, strict=True):
        spec = surface.spec
        options = {"checkpoint_every": spec.checkpoint_every, "checkpoint_seconds": spec.checkpoint_seconds}
        trainers.append(create_trainer(redis_url, surface.name, spec.algorithm, learner, **options))
    serve.start(proxy_location="Disabled")
    for surface, learner in zip(surfaces, learners, strict=True):
        name = app_name(surface.name)
        app = deployment(name, replicas=surface.spec.replicas).bind(redis_url, surface.name, learner)
        serve.run(app, name=name, route_prefix=None)
    return trainers


def stop_agents(config: ServiceConfig, trainers: list[Any]) -> None:
    """Delete the policy applications and end the trainers (what they learned is checkpointed in
    Redis up to their last checkpoint; the stream holds the rest)."""
    if not trainers:
        return
    from ray import serve

    for surface in config.surfaces.values():
        if surface.kind == "agent":
            serve.delete(app_name(surface.name))
    try:  # keep what was learned since the last checkpoint
        ray.get([t.checkpoint_now.remote() for t in trainers], timeout=30)
    except (ray.exceptions.RayError, TimeoutError) as exc:
        log.warning("trainers did not checkpoint before stopping: %s", exc)
    for trainer in trainers:
        ray.kill(trainer, no_restart=True)


def create_fitter(config: ServiceConfig, redis_url: str, name_prefix: str = "shard") -> Any:
    """Create (or reuse, by name) the segment fitter; ``wait_ready`` waits until it answers."""
    return FitterActor.options(
        name=f"{name_prefix}-segments", namespace=NAMESPACE, get_if_exists=True, max_restarts=-1,
        max_task_retries=0, max_concurrency=10, num_cpus=0, enable_task_events=False,
    ).remote(config, redis_url)  # fmt: skip


def create_shards(config: ServiceConfig, redis_url: str, traces: str = "", name_prefix: str = "shard") -> list[Any]:
    """Create (or reuse, by name) the shard actors; ``wait_ready`` waits until each answers."""
    return [
        ShardActor.options(
            name=f"{name_prefix}-{k}",
            namespace=NAMESPACE,
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=0,
            # Async actor: concurrent batches interleave on one event loop at awaits.
            max_concurrency=1000,
            # Shards are mostly waiting on Redis and the network: do not reserve a core each.
            num_cpus=0,
            # No task events for every batch: the GCS kept up to 100k of them (Ray processes grew
            # 250 MB in a 10-minute soak) and reporting them costs CPU on every call.
            enable_task_events=False,
        ).remote(config, redis_url, k, traces)
        for k in range(config.shards)
    ]


def wait_ready(actors: list[Any], timeout: float = 120.0) -> None:
    """Wait until each actor answers ``ready``. Actors created together start their processes at
    once: a shard's imports take seconds, so the service creates all of them before it waits."""
    ray.get([a.ready.remote() for a in actors], timeout=timeout)


def stop_shards(actors: list[Any], flush: bool = True, timeout: float = 10.0) -> None:
    """Flush snapshots (graceful) and end the actors for good.

    A flush takes milliseconds when Redis is up; the timeout only bounds a stop whose
    Redis or shards are gone, so that the rest of the stop still happens.
    """
    if flush:
        try:
            ray.get([a.flush.remote() for a in actors], timeout=timeout)
        except (ray.exceptions.RayError, TimeoutError) as exc:
            # Snapshots only shorten replay; the feedback log already holds every
            # acknowledged event, so stopping without them loses nothing.
            log.warning("shards did not flush before stopping: %s", exc)
    for actor in actors:
        ray.kill(actor, no_restart=True)


def stop_fitter(actor: Any) -> None:
    """End the segment fitter for good (what it fitted is in Redis already)."""
    ray.kill(actor, no_restart=True)
