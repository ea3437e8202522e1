"""The policy replicas: a Ray Serve deployment that answers Q-values of an agent surface, batched.

Each replica holds one model: ``(version, network, transitions)`` in a single attribute, replaced
whole, so a batch reads one version and no request ever sees half of one. A thread polls the
surface's published version (``workers/trainer.py``'s ``weights_key``) every ``poll_seconds`` and,
when it moved, builds the new network aside and then swaps it in: every replica serves version k
within ``poll_seconds`` plus one load of k after the trainer published it. A replica that starts
late loads the current version before it serves. Before any version is published, version 0 is
the network the surface's config and seed initialise: the trainer's starting point.

The shards call ``q_values_many`` (one call per batch of their agent decisions; ``q_values`` batches
single states) through a ``DeploymentHandle`` and apply exploration themselves (with
the user's seeded RNG, recording the exact propensity and the version that answered), so replicas
keep no per-user state and any replica can answer any request.

Serve's default ``max_ongoing_requests`` of 5 collapses throughput under concurrency (DESIGN.md);
requests are batched (``@serve.batch``) into one forward pass of up to ``MAX_BATCH`` states.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import redis
import torch
from ray import serve

from rewardloop.learning.agents.checkpoint import config_from_dict
from rewardloop.learning.agents.dqn import DQNConfig, QNetwork, build_network
from rewardloop.workers.trainer import weights_key

log = logging.getLogger(__name__)

MAX_BATCH = 64
MAX_ONGOING = 256
POLL_SECONDS = 0.1


Model = tuple[int, QNetwork, int]


def load_model(config: DQNConfig, published: Mapping[Any, Any]) -> Model:
    """The network a published version holds (``weights_key``'s fields)."""
    network = build_network(config, config.seed)
    state = torch.load(io.BytesIO(published[b"weights"]), weights_only=True)
    network.load_state_dict(state)
    network.eval()
    return int(published[b"version"]), network, int(published.get(b"transitions", b"0"))


class PolicyReplica:
    """One replica of an agent surface's policy (wrapped by ``serve.deployment`` in ``deployment``)."""

    def __init__(self, redis_url: str, surface: str, config: dict[str, Any], poll_seconds: float = POLL_SECONDS):
        torch.set_num_threads(1)
        dqn = config_from_dict("dqn", config)
        assert isinstance(dqn, DQNConfig)
        self.config = dqn
        self.surface = surface
        self.redis = redis.Redis.from_url(redis_url)
        self.model: Model = (0, build_network(dqn, dqn.seed).eval(), 0)
        self.poll_seconds = poll_seconds
        self.loads = 0
        self._stop = threading.Event()
        self.refresh()  # a late replica serves the current version from its first request
        self._poller = threading.Thread(target=self._poll, name=f"policy-{surface}", daemon=True)
        self._poller.start()

    def refresh(self) -> bool:
        """Load the published version if it is newer than the one served; True if it swapped."""
        version = self.redis.hget(weights_key(self.surface), "version")
        if version is None or int(version) <= self.model[0]:
            return False
        published = self.redis.hgetall(weights_key(self.surface))
        model = load_model(self.config, published)  # built aside...
        if model[0] > self.model[0]:
            self.model = model  # ...then swapped in one assignment
            self.loads += 1
            return True
        return False

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # Redis away for a moment: keep serving the version we have
                log.warning("policy %s: refresh failed", self.surface, exc_info=True)

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.001)
    async def q_values(self, observations: list[list[float]]) -> list[tuple[int, list[float], int]]:
        """Q-values of each state, with the version (and its transition count) that computed them."""
        version, network, transitions = self.model  # one model for the whole batch
        x = torch.as_tensor(np.asarray(observations, dtype=np.float32))
        with torch.inference_mode():
            q = network(x).numpy()
        return [(version, row.tolist(), transitions) for row in q]

    async def q_values_many(self, observations: list[list[float]]) -> tuple[int, list[list[float]], int]:
        """Q-values of a caller's batch of states (a shard's agent decisions of one round), by one
        version: no ``@serve.batch`` wait, the caller batched already."""
        version, network, transitions = self.model
        x = torch.as_tensor(np.asarray(observations, dtype=np.float32))
        with torch.inference_mode():
            rows = network(x).tolist()
        return version, rows, transitions

    def version(self) -> int:
        return self.model[0]

    def check_health(self) -> None:
        if not self._poller.is_alive():
            raise RuntimeError(f"policy {self.surface}: the version poller stopped")

    def __del__(self) -> None:
        self._stop.set()


def deployment(name: str, replicas: int = 1) -> Any:
    """The Serve deployment of ``PolicyReplica`` for one surface: ``replicas`` copies, no CPU
    reserved (they share the shards' cores), ``MAX_ONGOING`` requests each."""
    return serve.deployment(
        PolicyReplica,
        name=name,
        num_replicas=replicas,
        max_ongoing_requests=MAX_ONGOING,
        ray_actor_options={"num_cpus": 0},
        health_check_period_s=5,
    )
