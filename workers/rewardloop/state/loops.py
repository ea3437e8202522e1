"""Background loops of a process (catalogue refresh, CUPED covariates, the experiment monitor).

A loop must stop when its owner stops it, and a cancellation can be lost: one delivered at the
moment a library call (a Redis client's reply handling) is finishing may be absorbed on the way
out, and the loop then goes on and waits for work that never comes -- the owner's ``stop`` hangs.
The task still says it was asked to stop (``Task.cancelling``): each loop checks that once a turn
(``while loops.running():``), and ``stop`` cancels again until the task has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

_RECANCEL_SECONDS = 1.0


def start(loop: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(loop)


def running() -> bool:
    """False once the running task was asked to stop, even if the cancellation itself was lost."""
    task = asyncio.current_task()
    return task is None or not task.cancelling()


async def stop(task: asyncio.Task[None] | None) -> None:
    """Cancels ``task`` and waits for it to end (its exception, if any, is the loop's own business)."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=_RECANCEL_SECONDS)
    if not task.cancelled():
        task.exception()  # retrieved: a loop that failed was logged by it, not again at collection
