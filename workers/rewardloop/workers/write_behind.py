"""Writes off the request path: decisions (log, join index, open window) and user snapshots.

A decision is answered before it is durable, and a snapshot is only a shortcut for the next
load (the feedback log is the truth), so both are written behind in one background task per
shard, batched into one Redis round trip, and retried while Redis is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from redis.exceptions import RedisError

from rewardloop.learning.rewards.entries import Settled
from rewardloop.learning.surface import SurfaceConfig
from rewardloop.state import settled
from rewardloop.state.records import DecisionRecord
from rewardloop.state.store import Snapshot, Store
from rewardloop.state.user_state import UserState

log = logging.getLogger(__name__)

WRITE_BACK_RETRY_SECONDS = 0.5
# How long what is queued waits for more before the writer starts: at a moderate rate each decision
# took a round trip (and an fsync in Redis) of its own. A load waiting for a snapshot, and a drain,
# cut it short (``_wake``).
LINGER_SECONDS = 0.02
# A user whose last event is this old is snapshotted: their log is compacted (retention.py) and a
# crash replays little, without waiting for ``snapshot_every`` events that may never come.
IDLE_SNAPSHOT_SECONDS = 60.0
# Decisions held for writing while Redis is down; beyond it the oldest are dropped (the
# decision log is for analysis and joins; feedback naming a lost decision still joins
# when it names its surface).
MAX_PENDING_DECISIONS = 100_000
# How long a load waits for its user's pending snapshot to be written (``written``).
PENDING_WAIT_SECONDS = 10.0


class WriteBehind:
    """The shard's pending decisions and snapshots, and the one task that writes them."""

    def __init__(
        self,
        store: Store,
        windows_key: str,
        shard_index: int,
        encode: Callable[[UserState], bytes],
        surfaces: Mapping[str, SurfaceConfig],
    ):
        self._store = store
        self._windows_key = windows_key
        self._shard_index = shard_index
        self._encode = encode
        self._surfaces = surfaces
        self._pending_decisions: list[DecisionRecord] = []
        self._pending_snapshots: dict[str, Snapshot] = {}
        # Per pending snapshot: the state and the learned ledger entries it stores, to drop from
        # memory once written (settled.py).
        self._pending_settled: dict[str, tuple[UserState, list[Settled]]] = {}
        self._writing: set[str] = set()
        # Resolved when the batch being written is done (written or failed): what ``written`` waits on.
        self._batch_done: asyncio.Future[None] | None = None
        # Users with events no snapshot covers, least recently learned first: (state, when it learned).
        self._unsnapshotted: OrderedDict[str, tuple[UserState, float]] = OrderedDict()
        self._writer: asyncio.Task[None] | None = None
        # Resolved to end the writer's linger early.
        self._woken: asyncio.Future[None] | None = None

    def decision(self, record: DecisionRecord) -> None:
        """Write a decision just made (its log entry, join index entry and open window)."""
        self._pending_decisions.append(record)
        self.schedule()

    def snapshot(self, state: UserState, now_ms: int | None = None) -> None:
        """Queue the user's snapshot as of now, with their learned ledger entries whose window closed
        by ``now_ms`` (default: now; written at the next ``schedule``, then they leave memory)."""
        entries = state.ledger.settle(self._surfaces, int(time.time() * 1000) if now_ms is None else now_ms)
        stored, defaults = settled.stored_fields(self._surfaces, entries)
        self._pending_snapshots[state.pseudonym] = Snapshot(self._encode(state), state.last_id, stored, defaults)
        self._pending_settled[state.pseudonym] = (state, entries)
        state.since_snapshot = 0
        state.dirty = False
        self._unsnapshotted.pop(state.pseudonym, None)

    @property
    def unsnapshotted(self) -> int:
        return len(self._unsnapshotted)

    def learned(self, state: UserState) -> None:
        """``state`` learned an event no snapshot covers yet (snapshotted once idle)."""
        self._unsnapshotted[state.pseudonym] = (state, time.monotonic())
        self._unsnapshotted.move_to_end(state.pseudonym)

    def forget(self, pseudonym: str) -> None:
        """The user's state in memory is no longer trusted (the cache dropped it after an error):
        never snapshot it. A snapshot older than one already written would need log entries that
        snapshot let compaction remove."""
        self._unsnapshotted.pop(pseudonym, None)

    def snapshot_idle(self, now: float | None = None) -> int:
        """Snapshot every user idle for ``IDLE_SNAPSHOT_SECONDS``, oldest first; how many."""
        now = time.monotonic() if now is None else now
        count = 0
        while self._unsnapshotted:
            state, learned_at = next(iter(self._unsnapshotted.values()))
            if now - learned_at < IDLE_SNAPSHOT_SECONDS:
                break
            self.snapshot(state)
            count += 1
        self.schedule()
        return count

    def schedule(self) -> None:
        """Start the writer if anything is pending and it is not running."""
        if self._writer is None and (self._pending_decisions or self._pending_snapshots):
            self._writer = asyncio.get_running_loop().create_task(self._write_back())

    async def drain(self) -> None:
        """Wait until everything pending is written."""
        while self._writer is not None:
            self._wake()
            await asyncio.shield(self._writer)

    async def written(self, pseudonym: str) -> None:
        """Wait until no snapshot of the user is pending: a load must read the newest one, or the
        ledger entries stored with it could be newer than the snapshot it reads (settled.py).
        RedisError after ``PENDING_WAIT_SECONDS`` (Redis down)."""
        self.schedule()
        deadline = time.monotonic() + PENDING_WAIT_SECONDS
        while pseudonym in self._pending_snapshots or pseudonym in self._writing:
            self._wake()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RedisError(f"the snapshot of user {pseudonym} is not written yet (Redis down?)")
            batch = self._batch_done
            if batch is None or batch.done():
                await asyncio.sleep(0.001)  # the writer is about to take the next batch
            else:
                # One batch at a time: the writer's loop may never end under steady load.
                await asyncio.wait([batch], timeout=remaining)

    def _wake(self) -> None:
        """End the writer's linger now."""
        if self._woken is not None and not self._woken.done():
            self._woken.set_result(None)

    async def _linger(self) -> None:
        """``LINGER_SECONDS``, or until ``_wake``."""
        loop = asyncio.get_running_loop()
        self._woken = woken = loop.create_future()
        timer = loop.call_later(LINGER_SECONDS, self._wake)
        try:
            await woken
        finally:
            timer.cancel()
            self._woken = None

    async def _write_back(self) -> None:
        try:
            await self._linger()
            while self._pending_decisions or self._pending_snapshots:
                decisions, self._pending_decisions = self._pending_decisions, []
                snapshots, self._pending_snapshots = self._pending_snapshots, {}
                to_settle, self._pending_settled = self._pending_settled, {}
                self._writing = set(snapshots)
                self._batch_done = asyncio.get_running_loop().create_future()
                try:
                    await self._store.write_back(decisions, snapshots, self._windows_key)
                    for state, entries in to_settle.values():
                        state.ledger.forget_settled(entries)
                except RedisError as exc:
                    log.warning("shard %d: write-back failed, retrying: %s", self._shard_index, exc)
                    self._pending_decisions[:0] = decisions
                    overflow = len(self._pending_decisions) - MAX_PENDING_DECISIONS
                    if overflow > 0:
                        log.error("shard %d: dropping %d unwritten decisions", self._shard_index, overflow)
                        del self._pending_decisions[:overflow]
                    # A newer snapshot queued meanwhile supersedes the failed one.
                    self._pending_snapshots = {**snapshots, **self._pending_snapshots}
                    self._pending_settled = {**to_settle, **self._pending_settled}
                    await asyncio.sleep(WRITE_BACK_RETRY_SECONDS)
                finally:
                    self._writing = set()
                    self._batch_done.set_result(None)
        finally:
            self._writer = None
