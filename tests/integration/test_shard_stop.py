"""A shard's background loops stop when the shard stops, even when a cancellation lands as a Redis
call inside them finishes and is absorbed there (``state/loops.py``). Before, ``stop_background``
cancelled once and waited: such a loop went on forever and the shard's stop (and ``bench/shard.py``)
hung. A shard on a real Redis; the absorbing is a wrapper around the loop's own Redis call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.messages import Decision, RecommendCall
from rewardloop.workers.redis_server import EmbeddedRedis
from rewardloop.workers.shard import ShardCore
from tests.conftest import ITEMS

DB = 13
CONFIG = {"service": {"shards": 1, "seed": 5}, "surfaces": {"s": {"algorithm": "thompson", "items": ITEMS[:4]}}}


def _absorbing_once(call: Callable[..., Awaitable[Any]], entered: asyncio.Event) -> Callable[..., Awaitable[Any]]:
    """``call``, except that its first run afterwards waits and swallows a cancellation, as a library
    call may when cancelled just as it finishes."""
    absorbed = False

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        nonlocal absorbed
        result = await call(*args, **kwargs)
        if not absorbed:
            absorbed = True
            entered.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)
        return result

    return wrapped


@pytest.mark.parametrize(
    "where", ["experiments.refresh", "priors.refresh", "windows.close_due"], ids=["catalogue", "priors", "windows"]
)
async def test_stopping_a_shard_ends_a_loop_whose_cancellation_was_absorbed(
    redis_server: EmbeddedRedis, where: str
) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + f"/{DB}"
    shard = ShardCore(ServiceConfig.from_dict(CONFIG), url)
    await shard.store.redis.flushdb()
    try:
        [decision] = await shard.recommend([RecommendCall("ab" * 16, "s", 2)])  # starts the loops
        assert isinstance(decision, Decision)
        # Only now (each loop looks its call up every turn): a start-up call is not a loop's.
        owner_name, method = where.split(".")
        owner = getattr(shard, owner_name)
        entered = asyncio.Event()
        setattr(owner, method, _absorbing_once(getattr(owner, method), entered))
        await asyncio.wait_for(entered.wait(), 10)
        await asyncio.wait_for(shard.stop_background(), 10)
    finally:
        await shard.write_behind.drain()
        await shard.store.close()
