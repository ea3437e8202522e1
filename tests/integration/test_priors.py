"""Population priors published and merged across shards through a real Redis."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis.asyncio as aioredis

from rewardloop.learning.bandits import make_policy
from rewardloop.learning.segments import SegmentModel
from rewardloop.learning.segments.versions import encode, next_version
from rewardloop.state import keys
from rewardloop.state.priors import POPULATION, Priors
from rewardloop.state.segment_priors import MODEL_FIELD, VERSION_FIELD
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


async def test_priors_are_served_from_the_mixture_and_memberships_shown_in_the_segments(
    redis_server: EmbeddedRedis,
) -> None:
    config = ServiceConfig.from_dict({"surfaces": {"ts": {"algorithm": "thompson", "items": ITEMS}}})
    surface = config.surfaces["ts"]
    policies = {"ts": make_policy(surface.policy_config, len(ITEMS))}
    segments = SegmentModel(np.array([[0.1, 0.4, 0.2, 0.3], [0.4, 0.1, 0.3, 0.2]]), np.full((2, 4), 50.0),
                            np.array([20.0, 20.0]), np.array([0.5, 0.5]))  # fmt: skip
    mixture = SegmentModel(np.array([[0.1, 0.5, 0.2, 0.2], [0.2, 0.3, 0.2, 0.3], [0.5, 0.1, 0.3, 0.1]]),
                           np.full((3, 4), 30.0), np.array([10.0, 30.0, 60.0]), np.array([0.3, 0.4, 0.3]))  # fmt: skip
    version = next_version(None, segments, 1, mixture)
    client = aioredis.Redis.from_url(redis_server.url)
    await client.hset(
        keys.segment_model_key("ts", surface.fingerprint), mapping={MODEL_FIELD: encode(version), VERSION_FIELD: "1"}
    )
    shard = Priors(config.surfaces, policies, 0, shards=1)
    await shard.refresh(client)
    await client.aclose()
    own = policies["ts"].new_state()
    for arm, reward in [(1, 1.0), (1, 1.0), (0, 0.0)]:
        policies["ts"].update(own, arm, reward)
    served = shard.prior("ts", "", own, {})
    assert served is not None
    state, strength = served
    weights = mixture.membership(own.arrays["counts"], own.arrays["reward_sums"])
    plays, sums, expected_strength = mixture.prior(weights)
    np.testing.assert_allclose(state.arrays["counts"], plays)
    np.testing.assert_allclose(state.arrays["reward_sums"], sums)
    np.testing.assert_allclose(strength, expected_strength)
    # A user without evidence: the mixture at its shares.
    newcomer = shard.prior("ts", "", policies["ts"].new_state(), {})
    assert newcomer is not None
    plays, sums, expected_strength = mixture.prior(mixture.weights)
    np.testing.assert_allclose(newcomer[0].arrays["reward_sums"] / newcomer[0].arrays["counts"], sums / plays)
    np.testing.assert_allclose(newcomer[1], expected_strength)
    shown = shard.learned.describe("ts", own, None)
    assert [segment for segment, _ in shown["memberships"]] == [0, 1]  # the segments' ids, the likelier first
    assert shown["prior_strength"] == pytest.approx(float(weights @ mixture.strengths))
