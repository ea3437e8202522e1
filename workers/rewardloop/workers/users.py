"""The users a shard holds in memory: an LRU of ``UserState``, each rebuilt from Redis on first touch
(snapshot + feedback-log replay, ``state/snapshots.py``), with bounded concurrent loads, within a
byte budget (``service.memory_budget_mb``): over it, the least recently used users are snapshotted
and dropped, and reload exactly (their snapshot carries their RNG too)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping

from rewardloop.learning.bandits import Policy
from rewardloop.learning.surface import SurfaceConfig
from rewardloop.state import settled
from rewardloop.state.snapshots import replay, replay_start, restore_from_snapshot
from rewardloop.state.store import Store
from rewardloop.state.user_state import UserState
from rewardloop.workers.config import ServiceConfig

# Users kept in memory per shard at most, whatever their bytes.
MAX_CACHED_USERS = 1_000_000
# Users rebuilt from Redis at once: a batch of many unseen users must not take
# every connection (or every Redis cycle) for itself.
MAX_CONCURRENT_LOADS = 32


class UserCache:
    """The shard's users in memory. ``on_evict`` gets a dropped user that has unsnapshotted rewards;
    ``on_distrust`` the pseudonym of a user dropped because its state may miss durable events;
    ``on_replayed`` a loaded user whose log had entries after its snapshot. ``budget``: bytes for the
    users (default: the whole ``memory_budget_mb``). ``written(pseudonym)`` waits until no snapshot of
    the user is pending (``WriteBehind.written``), so a load reads the newest.

    One state object per user, whoever asks when: a user is in memory, or has one load in flight,
    or neither, and goes from one to the next without an await in between. Two objects would lose
    feedback: an event applied to one is missing from the other, whose next snapshot then claims a
    log position it does not cover. For the same reason a user that an ingest ``holds`` is not
    evicted: a new load could read the log before the ingest's append lands.
    """

    def __init__(
        self,
        store: Store,
        config: ServiceConfig,
        policies: Mapping[str, Policy],
        surfaces: Mapping[str, SurfaceConfig],
        on_evict: Callable[[UserState], None],
        on_distrust: Callable[[str], None] = lambda _: None,
        on_replayed: Callable[[UserState], None] = lambda _: None,
        budget: int | None = None,
        written: Callable[[str], Awaitable[None]] | None = None,
    ):
        self._store = store
        self._config = config
        self._policies = policies
        self._surfaces = surfaces
        self._on_evict = on_evict
        self._on_distrust = on_distrust
        self._on_replayed = on_replayed
        self._written = written
        # Users' real-time activity is kept (and rebuilt on load) only when some surface uses it.
        self._uses_realtime = any(s.features.realtime for s in surfaces.values())
        self._users: OrderedDict[str, UserState] = OrderedDict()
        # Each cached user's estimated bytes (UserState.footprint) as of its last change, and their sum.
        self._bytes: dict[str, int] = {}
        self.bytes = 0
        self.budget = config.memory_budget_mb * 2**20 if budget is None else budget
        self.evictions = 0
        self._loading: dict[str, asyncio.Task[UserState]] = {}
        self._held: Counter[str] = Counter()
        self._load_slots = asyncio.Semaphore(MAX_CONCURRENT_LOADS)

    def values(self) -> Iterable[UserState]:
        return self._users.values()

    def __len__(self) -> int:
        return len(self._users)

    def resized(self, states: Iterable[UserState]) -> None:
        """The users' states changed (learned, decided): put them at rest (``UserState.rest``), account
        their bytes, evict if over budget."""
        for state in states:
            if self._users.get(state.pseudonym) is state:
                state.rest(self._policies)
                self._account(state.pseudonym, state.footprint())
        self._evict()

    def _account(self, pseudonym: str, size: int) -> None:
        self.bytes += size - self._bytes.get(pseudonym, 0)
        self._bytes[pseudonym] = size

    async def get(self, pseudonyms: Iterable[str]) -> dict[str, UserState]:
        """The users' states, loading the ones not in memory."""
        found: dict[str, UserState] = {}
        loads: dict[str, asyncio.Task[UserState]] = {}
        for p in pseudonyms:
            state = self._users.get(p)
            if state is not None:
                self._users.move_to_end(p)
                found[p] = state
            else:
                loads[p] = self._loading.get(p) or self._start_load(p)
        if loads:
            # Shielded: a caller that gives up must not cancel a load other callers wait for.
            loaded = await asyncio.gather(*(asyncio.shield(t) for t in loads.values()))
            found.update(zip(loads, loaded, strict=True))
        return found

    @contextlib.asynccontextmanager
    async def held(self, pseudonyms: Iterable[str]) -> AsyncIterator[dict[str, UserState]]:
        """The users' states, for writing events and applying them: not evicted until the block
        ends, and after any error rebuilt from Redis on next touch (some events may be durable
        without being applied)."""
        pseudonyms = set(pseudonyms)
        self._held.update(pseudonyms)
        try:
            users = await self.get(pseudonyms)
            yield users
        except BaseException:
            for p in pseudonyms:
                self._drop(p)
                self._on_distrust(p)
            raise
        finally:
            self._held.subtract(pseudonyms)
            for p in pseudonyms:
                if self._held[p] <= 0:
                    del self._held[p]
        self.resized(users.values())

    def _start_load(self, pseudonym: str) -> asyncio.Task[UserState]:
        task = asyncio.get_running_loop().create_task(self._load(pseudonym))
        # Retrieved here too, so a failed load that every caller gave up on is not logged as unseen.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._loading[pseudonym] = task
        return task

    async def _load(self, pseudonym: str) -> UserState:
        """The user rebuilt from Redis, then in memory (no await between the two)."""
        try:
            async with self._load_slots:
                if self._written is not None:
                    await self._written(pseudonym)
                state = await self._read(pseudonym)
            self._users[pseudonym] = state
            state.rest(self._policies)
            self._account(pseudonym, state.footprint())
            if state.since_snapshot:
                self._on_replayed(state)
            self._evict()
            return state
        finally:
            del self._loading[pseudonym]

    def _evict(self) -> None:
        """Drop the least recently used users while over the byte budget or ``MAX_CACHED_USERS``,
        except held ones; a dropped user's unsnapshotted rewards and RNG go to ``on_evict``. Only the
        LRU end is read (and the few held users there), never the whole cache."""
        excess_bytes, excess_users = self.bytes - self.budget, len(self._users) - MAX_CACHED_USERS
        victims = []
        for pseudonym in self._users:
            if excess_bytes <= 0 and excess_users <= 0:
                break
            if pseudonym not in self._held:
                victims.append(pseudonym)
                excess_bytes -= self._bytes.get(pseudonym, 0)
                excess_users -= 1
        for pseudonym in victims:
            evicted = self._drop(pseudonym)
            self.evictions += 1
            if evicted is not None and (evicted.since_snapshot or evicted.dirty):
                self._on_evict(evicted)

    def _drop(self, pseudonym: str) -> UserState | None:
        self.bytes -= self._bytes.pop(pseudonym, 0)
        return self._users.pop(pseudonym, None)

    async def _read(self, pseudonym: str) -> UserState:
        """Snapshot + feedback-log replay (+ real-time activity, when a surface uses it)."""
        blob = await self._store.load_snapshot(pseudonym)
        state = restore_from_snapshot(
            blob, pseudonym, self._policies, self._surfaces, self._config.seed, self._config.quality
        )
        rewards = [r async for r in self._store.logged_rewards(pseudonym, replay_start(state))]
        # Entries the replay needs that the snapshot stored apart (not for surfaces replayed whole).
        resumed = [r for r in rewards if r.state_key not in state.stale]
        await settled.fetch(
            self._store.redis,
            {pseudonym: state},
            lambda: (w for r in resumed for w in settled.wanted(state, r, self._surfaces)),
            self._surfaces,
        )
        replay(state, rewards, self._policies, self._surfaces)
        state.since_snapshot = len(rewards)
        if self._uses_realtime:
            await self._rebuild_activity(state)
        return state

    async def _rebuild_activity(self, state: UserState) -> None:
        """The user's real-time activity from the last horizon of their logs (user_state docstring).

        A feedback event is logged at most the quality rule's 5 minutes before it occurred, and a
        decision after it was made, so reading from ``now - horizon - 5 min`` finds every event
        that can still count.
        """
        realtime = self._config.realtime
        start = str(max(int(time.time() * 1000) - realtime.horizon_ms - self._config.quality.max_future_ms, 0))
        async for r in self._store.logged_rewards(state.pseudonym, start):
            state.observe_feedback(realtime, r)
        async for d in self._store.logged_decisions(state.pseudonym, start):
            state.observe_decision(realtime, d.decided_at_ms, d.items[0])
