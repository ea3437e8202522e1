"""Background loops stop when asked, even when a call inside them absorbs the cancellation."""

from __future__ import annotations

import asyncio
import contextlib

from rewardloop.state import loops


async def _absorbs_a_cancellation(entered: asyncio.Event) -> None:
    """What a library call may do when cancelled as it finishes: swallow it and return."""
    entered.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(60)


async def test_a_loop_whose_cancellation_was_absorbed_ends_at_its_next_turn() -> None:
    entered, turns = asyncio.Event(), 0

    async def loop() -> None:
        nonlocal turns
        while loops.running():
            turns += 1
            await _absorbs_a_cancellation(entered)

    task = loops.start(loop())
    await entered.wait()
    await asyncio.wait_for(loops.stop(task), 5)
    assert task.done() and turns == 1


async def test_stop_cancels_again_a_loop_that_waits_on_after_absorbing_it() -> None:
    entered, never = asyncio.Event(), asyncio.Event()

    async def loop() -> None:  # does not check `running`: the first cancellation is lost
        await _absorbs_a_cancellation(entered)
        await never.wait()

    task = loops.start(loop())
    await entered.wait()
    await asyncio.wait_for(loops.stop(task), 5)
    assert task.cancelled()


async def test_stop_takes_none_and_a_loop_that_failed() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = loops.start(fails())
    await asyncio.sleep(0)
    await loops.stop(task)
    await loops.stop(None)
    assert isinstance(task.exception(), RuntimeError)
