"""Population priors published and merged across shards through a real Redis."""

from __future__ import annotations

import asyncio

import numpy as np
import redis.asyncio as aioredis

from rewardloop.learning.bandits import make_policy
from rewardloop.state.priors import POPULATION, Priors
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.redis_server import EmbeddedRedis

ITEMS = [f"i{k}" for k in range(4)]
CONFIG = ServiceConfig.from_dict(
    {
        "surfaces": {
            name: {
                "algorithm": "ucb1",
                "items": ITEMS,
                "features": {"categorical": {"seg": ["a", "b"]}},
                "cold_start": {"segment_feature": "seg"},
            }
            for name in ("s1", "s2", "s3")
        }
    }
)


def _shard(index: int) -> Priors:
    policies = {n: make_policy(s.policy_config, len(s.items)) for n, s in CONFIG.surfaces.items()}
    return Priors(CONFIG.surfaces, policies, index, shards=2)


async def test_shards_merge_each_others_contributions_while_learning_goes_on(redis_server: EmbeddedRedis) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.delete(*(f"rl:pop:{s}:{k}" for s in CONFIG.surfaces for k in (0, 1)))
    shards = [_shard(0), _shard(1)]
    rng = np.random.default_rng(0)
    expected = {s: np.zeros(4) for s in CONFIG.surfaces}

    async def learn_forever(stop: asyncio.Event) -> None:
        # Keep learning (any surface, any shard) while refreshes are in flight.
        while not stop.is_set():
            shard, surface, arm = int(rng.integers(2)), f"s{rng.integers(1, 4)}", int(rng.integers(4))
            shards[shard].learn(surface, "a", arm, 1.0, None, None)
            expected[surface][arm] += 1
            await asyncio.sleep(0)

    stop = asyncio.Event()
    learner = asyncio.create_task(learn_forever(stop))
    for _ in range(30):
        await asyncio.gather(*(s.refresh(client) for s in shards))
    stop.set()
    await learner
    for _ in range(2):  # everything learned is published, then read by the other shard
        await asyncio.gather(*(s.refresh(client) for s in shards))
    for surface, counts in expected.items():
        for shard in shards:
            prior = shard.prior(surface, "a")
            assert prior is not None
            state, strength = prior
            population = shard._segment_priors[surface][POPULATION]
            assert population.arrays["counts"].tolist() == counts.tolist()
            assert strength == 2.0 and state.arrays["counts"].sum() > 0
    await client.aclose()
