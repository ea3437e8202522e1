"""A fitter that meets an unreadable segment model refits over it without reusing a version number or a
segment id (real Redis): ids name taste groups to the experiments that target them."""

from __future__ import annotations

import time

import numpy as np
import redis.asyncio as aioredis

from rewardloop.learning.segments.versions import decode
from rewardloop.learning.surface import MAX_SEGMENTS
from rewardloop.simulator import Population
from rewardloop.state import keys
from rewardloop.state.segment_priors import MODEL_FIELD, NEXT_ID_FIELD, VERSION_FIELD, encode_evidence
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.redis_server import EmbeddedRedis
from rewardloop.workers.segments import SegmentFitter

ITEMS = [f"n{i}" for i in range(12)]


async def _publish(client: aioredis.Redis, key: str, users: range, seed: int) -> None:
    """Evidence of ``users`` of a three-group population, as a shard's sample holds it."""
    population = Population(n_users=200, n_items=len(ITEMS), n_segments=3, taste_strength=2.5, seed=4)
    clicks, rng = population.click_matrix(), np.random.default_rng(seed)
    now = int(time.time() * 1000)
    entries = {}
    for u in users:
        plays = rng.poisson(3.0, size=len(ITEMS)).astype(float)
        sums = rng.binomial(plays.astype(int), clicks[u]).astype(float)
        entries[f"{u:032x}"] = encode_evidence(plays, sums, now)
    await client.hset(key, mapping=entries)  # type: ignore[arg-type]


async def test_an_unreadable_model_is_refitted_with_numbers_and_ids_moving_on(redis_server: EmbeddedRedis) -> None:
    config = ServiceConfig.from_dict(
        {"service": {"shards": 1}, "surfaces": {"numbering": {"algorithm": "thompson", "items": ITEMS}}}
    )
    surface = config.surfaces["numbering"]
    model_key = keys.segment_model_key("numbering", surface.fingerprint)
    sample_key = keys.segment_sample_key("numbering", surface.fingerprint, 0)
    client = aioredis.Redis.from_url(redis_server.url)
    fitter = SegmentFitter(config, redis_server.url)
    try:
        await client.delete(model_key, sample_key)
        await _publish(client, sample_key, range(0, 150), seed=1)
        assert await fitter.fit() == {"numbering": 1}
        first = decode(await client.hget(model_key, MODEL_FIELD))
        assert first.ids == tuple(range(first.model.k))
        assert int(await client.hget(model_key, NEXT_ID_FIELD)) == first.next_id == first.model.k

        # The model's bytes are lost (a torn write, a format this fitter cannot read); more users arrive.
        await client.hset(model_key, MODEL_FIELD, b"not a model")
        await _publish(client, sample_key, range(150, 180), seed=2)
        assert await fitter.fit() == {"numbering": 2}
        second = decode(await client.hget(model_key, MODEL_FIELD))
        assert second.version == 2 and min(second.ids) >= first.next_id  # no id of version 1 named again
        assert int(await client.hget(model_key, VERSION_FIELD)) == 2

        # Written by a fitter that stored no next id: ids start where none can have been given.
        await client.hdel(model_key, NEXT_ID_FIELD)
        await client.hset(model_key, MODEL_FIELD, b"not a model either")
        await _publish(client, sample_key, range(180, 200), seed=3)
        assert await fitter.fit() == {"numbering": 3}
        third = decode(await client.hget(model_key, MODEL_FIELD))
        assert min(third.ids) >= MAX_SEGMENTS * 3 > max(second.ids)
    finally:
        await fitter.close()
        await client.delete(model_key, sample_key)
        await client.aclose()
