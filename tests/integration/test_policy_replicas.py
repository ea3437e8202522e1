"""The policy replicas on Ray Serve: batched answers, an atomic switch to each published version."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import redis
import torch
from ray import serve

from rewardloop.learning.agents.checkpoint import config_to_dict
from rewardloop.learning.agents.dqn import DQN, DQNConfig, build_network
from rewardloop.workers.policy_replicas import deployment
from rewardloop.workers.redis_server import EmbeddedRedis
from rewardloop.workers.trainer import policy_bytes, weights_key

pytestmark = pytest.mark.cluster

SURFACE = "agent-replicas"
CONFIG = DQNConfig(7, 5, learning_starts=16, batch_size=16, seed=3)


def trained(transitions: int) -> DQN:
    agent = DQN(CONFIG)
    rng = np.random.default_rng(transitions)
    for _ in range(transitions):
        obs = rng.random(7).astype(np.float32)
        agent.observe(obs, int(rng.integers(5)), float(rng.random()), obs, bool(rng.random() < 0.3))
    return agent


def expected(network: torch.nn.Module, states: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return network(torch.as_tensor(states)).numpy()


def publish(client: redis.Redis, version: int, agent: DQN) -> None:
    client.hset(
        weights_key(SURFACE),
        mapping={
            "version": version,
            "weights": policy_bytes(agent),
            "transitions": agent.transitions,
            "published_ms": 0,
        },
    )


async def ask(handle, states: np.ndarray) -> list[tuple[int, list[float], int]]:
    return list(await asyncio.gather(*(handle.q_values.remote(s.tolist()) for s in states)))


@pytest.fixture
def replicas(ray_cluster: None, redis_server: EmbeddedRedis, redis_client: redis.Redis):
    redis_client.delete(weights_key(SURFACE))
    serve.start(proxy_location="Disabled")
    app = deployment("policy-test", replicas=2).bind(redis_server.url, SURFACE, config_to_dict(CONFIG))
    handle = serve.run(app, name="policy-test", route_prefix=None)
    yield handle, redis_server.url
    serve.delete("policy-test")
    serve.shutdown()


async def test_every_answer_is_one_whole_version_and_replicas_follow_the_trainer(replicas, redis_client) -> None:
    handle, redis_url = replicas
    states = np.random.default_rng(0).random((32, 7)).astype(np.float32)
    models = {0: build_network(CONFIG, CONFIG.seed)}
    # Before anything is published: version 0, the trainer's starting network.
    assert {version for version, _, _ in await ask(handle, states[:8])} == {0}
    np.testing.assert_allclose(
        [q for _, q, _ in await ask(handle, states)], expected(models[0], states), rtol=1e-5, atol=1e-6
    )

    for version in (1, 2):
        agent = trained(100 * version)
        models[version] = agent.q_network
        publish(redis_client, version, agent)
        published_at = time.monotonic()
        switched = None
        while time.monotonic() - published_at < 20:
            answers = await ask(handle, states)
            for (answered, q, transitions), state in zip(answers, states, strict=True):
                assert answered in (version - 1, version)  # never older, never a mix:
                np.testing.assert_allclose(q, expected(models[answered], state[None])[0], rtol=1e-5, atol=1e-6)
                if answered == version:
                    assert transitions == agent.transitions
            if all(a[0] == version for a in answers):
                switched = time.monotonic() - published_at
                break
        assert switched is not None, f"version {version} never served everywhere"
        # Once switched, no request sees the old version again.
        for answered, _, _ in await ask(handle, np.repeat(states, 4, axis=0)):
            assert answered == version
        # A shard's batch (q_values_many): every row from the one version named.
        answered, rows, _ = await handle.q_values_many.remote(states.tolist())
        assert answered == version
        np.testing.assert_allclose(rows, expected(models[version], states), rtol=1e-5, atol=1e-6)

    # A replica that starts late serves the current version from its first request.
    app = deployment("policy-test", replicas=3).bind(redis_url, SURFACE, config_to_dict(CONFIG))
    handle = serve.run(app, name="policy-test", route_prefix=None)
    assert {a[0] for a in await ask(handle, np.repeat(states, 4, axis=0))} == {2}
