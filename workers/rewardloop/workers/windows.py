"""Reward windows: closing the decisions whose window is over without a reward.

Open windows live in Redis (``keys.windows_key``: one sorted set per shard, written behind with
the decision), so a crash forgets none. Every ``WINDOW_CLOSE_SECONDS`` the due ones are handed to
``Ingest.close`` (the same ingest path as feedback), and only then forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from rewardloop.state import loops
from rewardloop.state.keys import shard_for, windows_key
from rewardloop.state.store import Store

if TYPE_CHECKING:
    from rewardloop.workers.feedback import Ingest

log = logging.getLogger(__name__)

WINDOW_CLOSE_SECONDS = 0.25
WINDOWS_PER_BATCH = 1000


class RewardWindows:
    """The open reward windows of one shard."""

    def __init__(self, store: Store, ingest: Ingest, shard_index: int, shards: int):
        self._store = store
        self._ingest = ingest
        self._shard_index = shard_index
        self._shards = shards
        self.key = windows_key(shard_index)

    async def run(self) -> None:
        """Close due windows until stopped (the shard's background task, ``loops.stop``)."""
        while loops.running():
            await asyncio.sleep(WINDOW_CLOSE_SECONDS)
            try:
                await self.close_due()
            except Exception:  # Redis down: the due windows stay in Redis; next tick
                log.warning("shard %d: closing reward windows failed", self._shard_index, exc_info=True)

    async def close_due(self, now_ms: int | None = None) -> int:
        """Log and learn a window-close entry (learning/rewards/ledger.py) for every decision whose
        window is over with items that got no reward; the number of entries written."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        written = 0
        while due := await self._store.due_windows(self.key, now, WINDOWS_PER_BATCH):
            owners = [shard_for(p, self._shards) for p, _, _ in due]
            mine = [(p, d) for (p, d, _), owner in zip(due, owners, strict=True) if owner == self._shard_index]
            others = [
                (windows_key(o), p, d, at) for (p, d, at), o in zip(due, owners, strict=True) if o != self._shard_index
            ]
            if others:  # the shard count changed: each user's owner closes their windows
                await self._store.hand_over_windows(others)
            written += await self._ingest.close(mine)
            # Only now: a crash before this point leaves them to close again (as duplicates).
            await self._store.forget_windows(self.key, [(p, d) for p, d, _ in due])
        return written
