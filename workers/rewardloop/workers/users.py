"""The users a shard holds in memory: an LRU of ``UserState``, each rebuilt from Redis on first touch
(snapshot + feedback-log replay, ``state/snapshots.py``), with bounded concurrent loads."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping

from rewardloop.learning.bandits import Policy
from rewardloop.learning.surface import SurfaceConfig
from rewardloop.state.snapshots import replay, replay_start, restore_from_snapshot
from rewardloop.state.store import Store
from rewardloop.state.user_state import UserState
from rewardloop.workers.config import ServiceConfig

# Users kept in memory per shard; the least recently used beyond it are dropped (their
# state is in Redis, a later request rebuilds it).
MAX_CACHED_USERS = 200_000
# Users rebuilt from Redis at once: a batch of many unseen users must not take
# every connection (or every Redis cycle) for itself.
MAX_CONCURRENT_LOADS = 32


class UserCache:
    """The shard's users in memory. ``on_evict`` gets a dropped user that has unsnapshotted rewards."""

    def __init__(
        self,
        store: Store,
        config: ServiceConfig,
        policies: Mapping[str, Policy],
        surfaces: Mapping[str, SurfaceConfig],
        on_evict: Callable[[UserState], None],
    ):
        self._store = store
        self._config = config
        self._policies = policies
        self._surfaces = surfaces
        self._on_evict = on_evict
        # Users' real-time activity is kept (and rebuilt on load) only when some surface uses it.
        self._uses_realtime = any(s.features.realtime for s in surfaces.values())
        self._users: OrderedDict[str, UserState] = OrderedDict()
        self._loading: dict[str, asyncio.Future[UserState]] = {}
        self._load_slots = asyncio.Semaphore(MAX_CONCURRENT_LOADS)

    def values(self) -> Iterable[UserState]:
        return self._users.values()

    async def get(self, pseudonyms: set[str]) -> dict[str, UserState]:
        """The users' states, loading the ones not in memory."""
        found: dict[str, UserState] = {}
        missing = []
        for p in pseudonyms:
            state = self._users.get(p)
            if state is None:
                missing.append(p)
            else:
                self._users.move_to_end(p)
                found[p] = state
        if missing:
            loaded = await asyncio.gather(*(self._load_bounded(p) for p in missing))
            found.update(zip(missing, loaded, strict=True))
        return found

    @contextlib.contextmanager
    def rebuilt_on_error(self, users: Iterable[str]) -> Iterator[None]:
        """Around writing events and applying them: after any error some may be durable without
        being applied, so these users are rebuilt from Redis on next touch, not trusted from memory."""
        try:
            yield
        except BaseException:
            for pseudonym in users:
                self._users.pop(pseudonym, None)
            raise

    async def _load_bounded(self, pseudonym: str) -> UserState:
        async with self._load_slots:
            return await self._load(pseudonym)

    async def _load(self, pseudonym: str) -> UserState:
        pending = self._loading.get(pseudonym)
        if pending is not None:
            return await pending
        future: asyncio.Future[UserState] = asyncio.get_running_loop().create_future()
        self._loading[pseudonym] = future
        try:
            blob = await self._store.load_snapshot(pseudonym)
            state = restore_from_snapshot(
                blob, pseudonym, self._policies, self._surfaces, self._config.seed, self._config.quality
            )
            rewards = [r async for r in self._store.logged_rewards(pseudonym, replay_start(state))]
            replay(state, rewards, self._policies, self._surfaces)
            state.since_snapshot = len(rewards)
            if self._uses_realtime:
                await self._rebuild_activity(state)
            self._users[pseudonym] = state
            if len(self._users) > MAX_CACHED_USERS:
                _, evicted = self._users.popitem(last=False)
                if evicted.since_snapshot:
                    self._on_evict(evicted)
            future.set_result(state)
            return state
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody else must
            raise
        finally:
            del self._loading[pseudonym]

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
