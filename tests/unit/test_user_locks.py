"""UserLocks (workers/feedback.py): feedback batches of disjoint users run at once, never two
batches holding one user, and every batch gets its turn."""

from __future__ import annotations

import asyncio
import random

import pytest

from rewardloop.workers.feedback import UserLocks


async def test_no_user_is_held_by_two_batches_and_every_batch_ends() -> None:
    locks, rng = UserLocks(), random.Random(7)
    holding: list[set[str]] = []
    overlaps, most_at_once, done = 0, 0, 0

    async def batch(users: set[str]) -> None:
        nonlocal overlaps, most_at_once, done
        await asyncio.sleep(rng.random() / 1000)
        async with locks.held(users):
            overlaps += sum(not users.isdisjoint(other) for other in holding)
            holding.append(users)
            most_at_once = max(most_at_once, len(holding))
            await asyncio.sleep(rng.random() / 500)
            holding.remove(users)
            done += 1

    batches = [{f"u{rng.randrange(30)}" for _ in range(rng.randrange(1, 6))} for _ in range(300)]
    await asyncio.wait_for(asyncio.gather(*(batch(b) for b in batches)), timeout=60)
    assert (overlaps, done, len(locks)) == (0, 300, 0)
    assert most_at_once >= 3  # disjoint batches did run at once


async def test_a_cancelled_batch_releases_its_users() -> None:
    locks = UserLocks()
    started = asyncio.Event()

    async def stuck() -> None:
        async with locks.held({"u1", "u2"}):
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(stuck())
    await started.wait()
    with pytest.raises(TimeoutError):  # u2 is held: a batch that needs it waits (here, gives up)
        async with asyncio.timeout(0.05), locks.held({"u2"}):
            pass
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(locks) == 0
    async with asyncio.timeout(5), locks.held({"u2"}):
        assert len(locks) == 1
