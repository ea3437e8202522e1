"""The trainer against a real Redis: exact resume after a crash, duplicates learned once, the stream trimmed."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import ray
import redis.asyncio as aioredis
import torch

from rewardloop.learning.agents.checkpoint import config_to_dict, loads
from rewardloop.learning.agents.dqn import DQN, DQNConfig
from rewardloop.simulator.agent_env import AgentSessionEnv
from rewardloop.state.transitions import TransitionLog, TransitionRecord
from rewardloop.workers.cluster import create_trainer, wait_ready
from rewardloop.workers.redis_server import EmbeddedRedis
from rewardloop.workers.trainer import Trainer, checkpoint_key, weights_key


def logged_sessions(transitions: int, seed: int = 0) -> list[TransitionRecord]:
    """What shards would log: simulated sessions under a uniform behaviour policy."""
    env, rng = AgentSessionEnv(seed=seed), np.random.default_rng(seed)
    records: list[TransitionRecord] = []
    obs, _ = env.reset()
    while len(records) < transitions:
        action = int(rng.integers(env.mdp.n_actions))
        nxt, reward, done, truncated, _ = env.step(action)
        records.append(
            TransitionRecord(
                f"d{len(records):05d}", tuple(obs), action, reward, tuple(nxt), done, "v0", 1_700_000_000_000
            )
        )
        obs = env.reset()[0] if done or truncated else nxt
    return records


def new_agent() -> DQN:
    return DQN(DQNConfig(7, 5, learning_starts=64, batch_size=32, target_update_interval=50, seed=11))


def weights(trainer: Trainer) -> list[torch.Tensor]:
    assert isinstance(trainer.agent, DQN)
    return list(trainer.agent.q_network.state_dict().values())


@pytest.fixture
async def redis(redis_server: EmbeddedRedis):
    client = aioredis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def drain(trainer: Trainer) -> None:
    while await trainer.log.read_after(trainer.cursor, 1):
        await trainer.step(256)


async def test_a_killed_trainer_resumes_to_the_same_weights(redis: aioredis.Redis) -> None:
    records = logged_sessions(1_200)
    straight = Trainer(redis, "agent-straight", new_agent, checkpoint_every=100)
    await straight.start()
    await TransitionLog(redis, "agent-straight").append(records)
    await drain(straight)
    assert straight.version == 12
    assert await TransitionLog(redis, "agent-straight").length() == 0  # trimmed behind the checkpoint

    crashed = Trainer(redis, "agent-crash", new_agent, checkpoint_every=100)
    await crashed.start()
    await TransitionLog(redis, "agent-crash").append(records)
    for _ in range(3):
        await crashed.step(256)  # 768 learned: checkpoint 7 holds 700, 68 are learned past it
    assert crashed.version == 7 and crashed.agent.transitions == 768
    # Killed: its memory is gone. A new trainer resumes from the checkpoint.
    resumed = Trainer(redis, "agent-crash", new_agent, checkpoint_every=100)
    await resumed.start()
    assert resumed.version == 7 and resumed.agent.transitions == 700
    await drain(resumed)
    assert resumed.version == 12
    assert all(torch.equal(a, b) for a, b in zip(weights(straight), weights(resumed), strict=True))
    published = await redis.hgetall(weights_key("agent-crash"))
    assert int(published[b"version"]) == 12 and int(published[b"transitions"]) == 1_200


async def test_a_transition_appended_twice_is_learned_once(redis: aioredis.Redis) -> None:
    records = logged_sessions(300, seed=1)
    trainer = Trainer(redis, "agent-dup", new_agent, checkpoint_every=100)
    await trainer.start()
    log = TransitionLog(redis, "agent-dup")
    await log.append(records[:200])
    await log.append(records[150:])  # a shard re-sent 50 after a crash
    learned = skipped = 0
    while await log.read_after(trainer.cursor, 1):
        progress = await trainer.step(64)
        learned, skipped = learned + progress.learned, skipped + progress.skipped
    assert (learned, skipped) == (300, 50)
    assert trainer.agent.transitions == 300
    # And across a restart: the checkpoint (after 300 entries: d150-d249 came twice) carries the
    # ids it learned; what came after it is learned again by design, from the checkpoint's state.
    again = Trainer(redis, "agent-dup", new_agent, checkpoint_every=100)
    await again.start()
    assert again.learn(records[240]) is False
    assert again.learn(records[-1]) is True
    assert await redis.exists(checkpoint_key("agent-dup"))


async def test_checkpoints_asked_for_at_once_publish_successive_versions(redis: aioredis.Redis) -> None:
    trainer = Trainer(redis, "agent-twice", new_agent, checkpoint_every=100)
    await trainer.start()
    await TransitionLog(redis, "agent-twice").append(logged_sessions(40, seed=3))
    await trainer.step(64)
    # The loop's own checkpoint and an operator's checkpoint_now, both awaiting Redis at once.
    assert await asyncio.gather(trainer.checkpoint(), trainer.checkpoint()) == [1, 2]
    assert int((await redis.hgetall(weights_key("agent-twice")))[b"version"]) == 2


@pytest.mark.cluster
async def test_the_trainer_actor_killed_mid_training_resumes_exactly(
    ray_cluster: None, redis: aioredis.Redis, redis_server: EmbeddedRedis
) -> None:
    torch.set_num_threads(1)  # as the actor runs: the same arithmetic in both processes
    records = logged_sessions(1_200, seed=2)
    straight = Trainer(redis, "agent-straight-2", new_agent, checkpoint_every=100)
    await TransitionLog(redis, "agent-straight-2").append(records)
    await drain(straight)

    surface = "agent-killed"
    log = TransitionLog(redis, surface)
    config = config_to_dict(new_agent().config)
    actor = create_trainer(redis_server.url, surface, "dqn", config, checkpoint_every=100, checkpoint_seconds=3600)
    wait_ready([actor])
    await log.append(records[:650])
    status = await until(actor, lambda s: s["learned"] == 650)
    assert status["version"] == 6 and status["since_checkpoint"] == 50
    # Killed with 50 transitions learned past its checkpoint; Ray restarts it.
    ray.kill(actor, no_restart=False)
    await log.append(records[650:])
    status = await until(actor, lambda s: s["cursor"] != "0-0" and s["transitions"] == 1_200)
    assert status["learned"] == 600  # 600-649 again (from checkpoint 6's state), then the rest
    assert await actor.checkpoint_now.remote() == 13
    resumed, extra = loads(await redis.get(checkpoint_key(surface)))
    assert isinstance(resumed, DQN) and extra["version"] == 13
    assert all(
        torch.equal(a, b) for a, b in zip(weights(straight), resumed.q_network.state_dict().values(), strict=True)
    )
    ray.kill(actor, no_restart=True)


async def until(actor, done, timeout: float = 60.0) -> dict:
    """The actor's status once ``done(status)`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            status = await actor.status.remote()
        except ray.exceptions.RayActorError:  # restarting
            status = None
        if status is not None and done(status):
            return status
        assert asyncio.get_running_loop().time() < deadline, status
        await asyncio.sleep(0.1)
