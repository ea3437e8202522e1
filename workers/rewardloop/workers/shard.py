"""The shard: sole owner of the state of the users hashed to it.

Each user's policy states live here in memory, rebuilt from Redis on first touch
(snapshot + feedback-log replay). Feedback is made durable in Redis *before* it is
applied and acknowledged; decisions and snapshots are written behind, off the request
path. `ShardCore` is plain asyncio code, testable without Ray; `workers.cluster` hosts
it as a Ray actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from opentelemetry import propagate, trace
from redis.exceptions import RedisError

from rewardloop.learning.bandits import Policy, make_policy
from rewardloop.learning.rewards import BurstDetector, Event, EventContext, Signal, assess, fuse
from rewardloop.learning.rewards.ledger import Applied
from rewardloop.state.keys import shard_for, windows_key
from rewardloop.state.priors import Priors
from rewardloop.state.records import DecisionRecord, FeedbackRecord
from rewardloop.state.snapshots import encode_snapshot, replay, replay_start, restore_from_snapshot
from rewardloop.state.store import Store
from rewardloop.state.user_state import UserState
from rewardloop.workers.config import ServiceConfig, SurfaceConfig
from rewardloop.workers.messages import (
    ChosenItem,
    Decision,
    FeedbackCall,
    RecommendCall,
    Recorded,
    Rejected,
)

log = logging.getLogger(__name__)
tracer = trace.get_tracer("rewardloop.workers.shard")

# Users kept in memory per shard; the least recently used beyond it are dropped (their
# state is in Redis, a later request rebuilds it).
MAX_CACHED_USERS = 200_000
# Recent decisions kept in memory for feedback joins before Redis is asked.
MAX_RECENT_DECISIONS = 100_000
WRITE_BACK_RETRY_SECONDS = 0.5
PRIOR_REFRESH_SECONDS = 1.0
MAX_CONCURRENT_LOADS = 32
# Decisions held for writing while Redis is down; beyond it the oldest are dropped (the
# decision log is for analysis and joins; feedback naming a lost decision still joins
# when it names its surface).
MAX_PENDING_DECISIONS = 100_000
WINDOW_CLOSE_SECONDS = 0.25
WINDOWS_PER_BATCH = 1000


class ShardCore:
    def __init__(self, config: ServiceConfig, redis_url: str, shard_index: int = 0):
        self.config = config
        self.shard_index = shard_index
        # Tells one incarnation of the shard from the next (Ray restarts it after a crash).
        self.incarnation = uuid.uuid4().hex
        self.store = Store(redis_url)
        self.surfaces: dict[str, SurfaceConfig] = dict(config.surfaces)
        self.policies: dict[str, Policy] = {
            name: make_policy(
                s.policy_config, len(s.items), context_dim=s.context_dim, arm_features=s.item_feature_matrix()
            )
            for name, s in self.surfaces.items()
        }
        self.priors = Priors(self.surfaces, self.policies, shard_index, config.shards)
        self._prior_task: asyncio.Task[None] | None = None
        # Decisions whose reward window is open live in Redis (keys.windows_key), written behind.
        self._windows_key = windows_key(shard_index)
        self._window_task: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._all_arms = {name: np.arange(len(s.items)) for name, s in self.surfaces.items()}
        # Users' real-time activity is kept (and rebuilt on load) only when some surface uses it.
        self._uses_realtime = any(s.features.realtime for s in self.surfaces.values())
        self._users: OrderedDict[str, UserState] = OrderedDict()
        self._loading: dict[str, asyncio.Future[UserState]] = {}
        self._recent: OrderedDict[str, DecisionRecord] = OrderedDict()
        self._feedback_lock = asyncio.Lock()
        # Users rebuilt from Redis at once: a batch of many unseen users must not take
        # every connection (or every Redis cycle) for itself.
        self._load_slots = asyncio.Semaphore(MAX_CONCURRENT_LOADS)
        self._pending_decisions: list[DecisionRecord] = []
        self._pending_snapshots: dict[str, bytes] = {}
        self._writer: asyncio.Task[None] | None = None

    # -- requests ---------------------------------------------------------------------

    async def recommend(self, calls: Sequence[RecommendCall]) -> list[Decision | Rejected]:
        users = await self._users_for({c.pseudonym for c in calls})
        return [self._decide(c, users[c.pseudonym]) for c in calls]

    async def feedback(self, calls: Sequence[FeedbackCall]) -> list[Recorded | Rejected]:
        # One batch at a time: a user's log order and the order its state learns in
        # must agree, or a snapshot could claim a log position it does not cover.
        async with self._feedback_lock:
            joined = await self._join(calls)
            results: list[Recorded | Rejected | None] = [None] * len(calls)
            accepted: list[tuple[int, FeedbackRecord]] = []
            for i, record in enumerate(joined):
                if isinstance(record, Rejected):
                    results[i] = record
                else:
                    accepted.append((i, record))
            users = await self._users_for({r.pseudonym for _, r in accepted})
            bursts = {p: users[p].bursts.to_lists() for p in users}
            now_ms = int(time.time() * 1000)
            accepted = [(i, self._assess(users[r.pseudonym], r, now_ms)) for i, r in accepted]
            with self._rebuilt_on_error(users):
                stream_ids = await self.store.record_feedback([r for _, r in accepted])
                written = [(r, s) for (_, r), s in zip(accepted, stream_ids, strict=True)]
                self._recount_actions(users, bursts, written)
                for (i, record), stream_id in zip(accepted, stream_ids, strict=True):
                    state = users[record.pseudonym]
                    if stream_id is None:
                        known = state.ledger.reward_of(record.surface, record.decision_id, record.item_id)
                        results[i] = Recorded(duplicate=True, reward=record.reward if known is None else known)
                        continue
                    applied = self._learn(state, record, stream_id)
                    results[i] = Recorded(duplicate=False, reward=applied.reward, flag=applied.flag)
            self._schedule_write_back()
        return [r for r in results if r is not None]

    @contextlib.contextmanager
    def _rebuilt_on_error(self, users: Iterable[str]) -> Iterator[None]:
        """Around writing events and applying them: after any error some may be durable without
        being applied, so these users are rebuilt from Redis on next touch, not trusted from memory."""
        try:
            yield
        except BaseException:
            for pseudonym in users:
                self._users.pop(pseudonym, None)
            raise

    def _assess(self, state: UserState, record: FeedbackRecord, now_ms: int) -> FeedbackRecord:
        """The record with its quality flag (quality.py); counts it as one of the user's actions."""
        burst = state.observe_action(record)
        unknown = bool(record.decision_id) and not record.decided_at_ms
        verdict = assess(
            record.event(received_at_ms=now_ms),
            EventContext(decision_known=not unknown, burst=burst),
            self.config.quality,
        )
        return dataclasses.replace(record, flag=verdict.reason) if verdict.reason else record

    @staticmethod
    def _recount_actions(
        users: dict[str, UserState],
        before: dict[str, dict[str, list[int]]],
        written: list[tuple[FeedbackRecord, str | None]],
    ) -> None:
        """A duplicate was counted as an action by ``_assess``; recount those users' actions without it."""
        redo = {r.pseudonym for r, stream_id in written if stream_id is None}
        for pseudonym in redo:
            users[pseudonym].bursts = BurstDetector.from_lists(before[pseudonym], users[pseudonym].bursts.config)
        for record, stream_id in written:
            if stream_id is not None and record.pseudonym in redo:
                users[record.pseudonym].observe_action(record)

    async def user_state(self, pseudonym: str) -> dict[str, dict[str, Any]]:
        """The user's learned arrays per surface (for tests, export and debugging)."""
        state = (await self._users_for({pseudonym}))[pseudonym]
        return {
            name: {"n_updates": s.n_updates, **{k: v.tolist() for k, v in s.arrays.items()}}
            for name, s in state.policies.items()
        }

    async def ready(self) -> tuple[int, str]:
        await self.store.redis.ping()
        await self._start()
        return self.shard_index, self.incarnation

    async def _start(self) -> None:
        """Start the background work (prior refresh, window closes) once per incarnation, from its
        first call: Ray restarts a crashed shard and the next request is all it gets."""
        if self._window_task is not None:
            return
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start_background())
        starting = self._starting
        try:
            await asyncio.shield(starting)
        except BaseException:
            if starting.done() and self._starting is starting:
                self._starting = None  # it failed (Redis down): the next call tries again
            raise

    async def _start_background(self) -> None:
        """Restore this shard's prior contribution, then start the loops (the window loop last:
        it marks the shard started)."""
        loop = asyncio.get_running_loop()
        if self.priors.surfaces:
            await self.priors.restore(self.store.redis)
            self._prior_task = loop.create_task(self._refresh_priors_forever())
        self._window_task = loop.create_task(self._close_windows_forever())

    async def close(self) -> None:
        """Stop the background work, finish the writes behind, close Redis (a shard outside Ray)."""
        tasks = [t for t in (self._prior_task, self._window_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.flush()
        await self.store.close()

    async def refresh_priors(self) -> None:
        """Publish this shard's population statistics and merge everyone's, now."""
        await self.priors.refresh(self.store.redis)

    async def _refresh_priors_forever(self) -> None:
        while True:
            await asyncio.sleep(PRIOR_REFRESH_SECONDS)
            try:
                await self.priors.refresh(self.store.redis)
            except RedisError as exc:
                log.warning("shard %d: prior refresh failed: %s", self.shard_index, exc)

    async def flush(self) -> None:
        """Snapshot every user with unsnapshotted rewards and finish all writes behind."""
        for state in self._users.values():
            if state.since_snapshot or state.dirty:
                self._queue_snapshot(state)
        self._schedule_write_back()
        while self._writer is not None:
            await asyncio.shield(self._writer)

    # -- decisions --------------------------------------------------------------------

    def _decide(self, call: RecommendCall, state: UserState) -> Decision:
        parent = propagate.extract(call.trace) if call.trace else None
        with tracer.start_as_current_span(
            "shard.recommend",
            context=parent,
            attributes={"rewardloop.user": call.pseudonym, "rewardloop.surface": call.surface},
        ):
            now_ms = int(time.time() * 1000)
            surface = self.surfaces[call.surface]
            policy = self.policies[call.surface]
            policy_state = state.decision_state(policy, surface, now_ms)
            if call.candidates:
                available = np.fromiter((surface.index[c] for c in call.candidates), dtype=np.int64)
            else:
                available = self._all_arms[call.surface]
            features = call.features
            if surface.features.realtime:
                assert surface.realtime is not None
                live = surface.features.realtime_vector(surface.realtime, state.activity, now_ms)
                features = (*features, *live.tolist())
            context = np.array(features) if policy.contextual else None
            prior = self.priors.prior(call.surface, call.segment)
            effective = policy.combine(policy_state, *prior) if prior is not None else policy_state
            choices = policy.select(effective, available, call.n, state.rng, context=context)
            decision = Decision(
                decision_id=uuid.uuid4().hex,
                items=tuple(
                    ChosenItem(surface.items[c.arm], float(c.score), float(c.propensity), c.slot) for c in choices
                ),
                policy=surface.policy_config.name,
                model_version=f"{surface.fingerprint}.{policy_state.n_updates}",
            )
        record = DecisionRecord(
            pseudonym=call.pseudonym,
            decision_id=decision.decision_id,
            surface=call.surface,
            items=tuple(i.item_id for i in decision.items),
            propensities=tuple(i.propensity for i in decision.items),
            policy=decision.policy,
            model_version=decision.model_version,
            decided_at_ms=now_ms,
            closes_at_ms=now_ms + surface.reward.window_ms,
            features=features,
            segment=call.segment,
        )
        if self._uses_realtime:
            state.observe_decision(self.config.realtime, now_ms, record.items[0])
        self._remember(record)
        self._pending_decisions.append(record)
        self._schedule_write_back()
        return decision

    def _remember(self, decision: DecisionRecord) -> None:
        self._recent[decision.decision_id] = decision
        if len(self._recent) > MAX_RECENT_DECISIONS:
            self._recent.popitem(last=False)

    # -- feedback ---------------------------------------------------------------------

    async def _join(self, calls: Sequence[FeedbackCall]) -> list[FeedbackRecord | Rejected]:
        """Each event joined to its decision (when it names one), or why it cannot be."""
        known = await self._decisions([(c.pseudonym, c.decision_id) for c in calls if c.decision_id])
        return [self._check_feedback(c, known.get((c.pseudonym, c.decision_id))) for c in calls]

    async def _decisions(self, lookups: Sequence[tuple[str, str]]) -> dict[tuple[str, str], DecisionRecord]:
        """The known decisions among (pseudonym, decision_id) pairs: recent ones from memory, the rest
        from Redis. A pair that names another user's decision is not found."""
        known: dict[tuple[str, str], DecisionRecord] = {}
        missing = []
        for pseudonym, decision_id in lookups:
            recent = self._recent.get(decision_id)
            if recent is not None and recent.pseudonym == pseudonym:
                known[(pseudonym, decision_id)] = recent
            else:
                missing.append((pseudonym, decision_id))
        if missing:
            for lookup, stored in zip(missing, await self.store.find_decisions(missing), strict=True):
                if stored is not None:
                    known[lookup] = stored
        return known

    def _check_feedback(self, call: FeedbackCall, decision: DecisionRecord | None) -> FeedbackRecord | Rejected:
        features, propensity, segment, decided_at_ms = b"", 0.0, "", 0
        if decision is None:
            if call.decision_id and not call.surface:
                return Rejected(
                    "NOT_FOUND", f"decision_id {call.decision_id!r} is not a decision of this user", "decision_id"
                )
            surface_name = call.surface
        else:
            surface_name = decision.surface
            if call.surface and call.surface != surface_name:
                return Rejected(
                    "INVALID_ARGUMENT",
                    f"surface {call.surface!r} does not match the decision's surface {surface_name!r}",
                    "surface",
                )
            if call.item_id not in decision.items:
                return Rejected(
                    "INVALID_ARGUMENT", f"item_id {call.item_id!r} was not among the decision's items", "item_id"
                )
            features = decision.feature_bytes()
            propensity = decision.propensity_of(call.item_id)
            segment = decision.segment
            decided_at_ms = decision.decided_at_ms
        surface = self.surfaces.get(surface_name)
        if surface is None:
            return Rejected("NOT_FOUND", f"surface {surface_name!r} is not configured", "surface")
        if call.item_id not in surface.index:
            return Rejected(
                "INVALID_ARGUMENT", f"item_id {call.item_id!r} is not in surface {surface_name!r}", "item_id"
            )
        return FeedbackRecord(
            pseudonym=call.pseudonym,
            event_id=call.event_id,
            surface=surface_name,
            item_id=call.item_id,
            # The event's own reward; with a decision, the fused reward is what trains.
            reward=fuse(
                [Event(call.event_id, Signal(call.signal), call.value, call.occurred_at_ms, 0)], surface.reward
            ),
            signal=call.signal,
            value=call.value,
            occurred_at_ms=call.occurred_at_ms,
            decision_id=call.decision_id,
            features=features,
            propensity=propensity,
            segment=segment,
            decided_at_ms=decided_at_ms,
        )

    def _learn(self, state: UserState, record: FeedbackRecord, stream_id: str) -> Applied:
        logged = record.appended(stream_id)
        applied = state.learn(self.policies, self.surfaces, logged)
        if self._uses_realtime:
            state.observe_feedback(self.config.realtime, logged)
        if applied is None:
            applied = Applied(0.0, "")
        for change in applied.changes:
            propensity = change.propensity or None
            if change.old is None:
                self.priors.learn(
                    change.surface, change.segment, change.arm, change.new, change.context, propensity, change.at_ms
                )
            else:
                self.priors.revise(
                    change.surface, change.segment, change.arm, change.old, change.new, change.context, propensity,
                    change.at_ms,
                )  # fmt: skip
        state.last_id = stream_id
        state.since_snapshot += 1
        if state.since_snapshot >= self.config.snapshot_every:
            self._queue_snapshot(state)
        return applied

    # -- users ------------------------------------------------------------------------

    async def _users_for(self, pseudonyms: set[str]) -> dict[str, UserState]:
        if self._window_task is None:
            await self._start()
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
            blob = await self.store.load_snapshot(pseudonym)
            state = restore_from_snapshot(
                blob, pseudonym, self.policies, self.surfaces, self.config.seed, self.config.quality
            )
            rewards = [r async for r in self.store.logged_rewards(pseudonym, replay_start(state))]
            replay(state, rewards, self.policies, self.surfaces)
            state.since_snapshot = len(rewards)
            if self._uses_realtime:
                await self._rebuild_activity(state)
            self._users[pseudonym] = state
            if len(self._users) > MAX_CACHED_USERS:
                _, evicted = self._users.popitem(last=False)
                if evicted.since_snapshot:
                    self._queue_snapshot(evicted)
            future.set_result(state)
            return state
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody else must
            raise
        finally:
            del self._loading[pseudonym]

    # -- reward windows -----------------------------------------------------------------

    async def _close_windows_forever(self) -> None:
        while True:
            await asyncio.sleep(WINDOW_CLOSE_SECONDS)
            try:
                await self.close_due_windows()
            except Exception:  # Redis down: the due windows stay in Redis; next tick
                log.warning("shard %d: closing reward windows failed", self.shard_index, exc_info=True)

    async def close_due_windows(self, now_ms: int | None = None) -> int:
        """Log and learn a window-close entry (user_state docstring) for every item of every decision
        whose window is over without a reward; the number of entries written."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        written = 0
        while due := await self.store.due_windows(self._windows_key, now, WINDOWS_PER_BATCH):
            owners = [shard_for(p, self.config.shards) for p, _, _ in due]
            mine = [(p, d) for (p, d, _), owner in zip(due, owners, strict=True) if owner == self.shard_index]
            others = [
                (windows_key(o), p, d, at) for (p, d, at), o in zip(due, owners, strict=True) if o != self.shard_index
            ]
            if others:  # the shard count changed: each user's owner closes their windows
                await self.store.hand_over_windows(others)
            written += await self._close(mine)
            # Only now: a crash before this point leaves them to close again (as duplicates).
            await self.store.forget_windows(self._windows_key, [(p, d) for p, d, _ in due])
        return written

    async def _close(self, due: list[tuple[str, str]]) -> int:
        decisions = (await self._decisions(due)).values()
        async with self._feedback_lock:
            users = await self._users_for({d.pseudonym for d in decisions})
            closes = [
                close
                for decision in decisions
                if decision.surface in self.surfaces
                for close in self._window_closes(users[decision.pseudonym], decision)
            ]
            if not closes:
                return 0
            written = 0
            with self._rebuilt_on_error(users):
                stream_ids = await self.store.record_feedback(closes)
                for record, stream_id in zip(closes, stream_ids, strict=True):
                    if stream_id is not None:  # None: closed before (a crash before forgetting it)
                        self._learn(users[record.pseudonym], record, stream_id)
                        written += 1
            self._schedule_write_back()
        return written

    def _window_closes(self, state: UserState, decision: DecisionRecord) -> list[FeedbackRecord]:
        surface = self.surfaces[decision.surface]
        closes_at = decision.decided_at_ms + surface.reward.window_ms
        features = decision.feature_bytes()
        return [
            FeedbackRecord(
                pseudonym=decision.pseudonym,
                event_id=f"window-close:{decision.decision_id}:{item}",
                surface=decision.surface,
                item_id=item,
                reward=surface.reward.default_reward,
                signal=Signal.IMPRESSION.value,
                value=0.0,
                occurred_at_ms=closes_at,
                decision_id=decision.decision_id,
                features=features,
                propensity=propensity,
                segment=decision.segment,
                decided_at_ms=decision.decided_at_ms,
                window_close=True,
            )
            for item, propensity in zip(decision.items, decision.propensities, strict=True)
            if item in surface.index and state.ledger.needs_close(surface.name, decision.decision_id, item)
        ]

    async def _rebuild_activity(self, state: UserState) -> None:
        """The user's real-time activity from the last horizon of their logs (user_state docstring).

        A feedback event is logged at most the quality rule's 5 minutes before it occurred, and a
        decision after it was made, so reading from ``now - horizon - 5 min`` finds every event
        that can still count.
        """
        realtime = self.config.realtime
        start = str(max(int(time.time() * 1000) - realtime.horizon_ms - self.config.quality.max_future_ms, 0))
        async for r in self.store.logged_rewards(state.pseudonym, start):
            state.observe_feedback(realtime, r)
        async for d in self.store.logged_decisions(state.pseudonym, start):
            state.observe_decision(realtime, d.decided_at_ms, d.items[0])

    # -- writes behind ----------------------------------------------------------------

    def _queue_snapshot(self, state: UserState) -> None:
        self._pending_snapshots[state.pseudonym] = encode_snapshot(state, self.policies, self.surfaces)
        state.since_snapshot = 0
        state.dirty = False

    def _schedule_write_back(self) -> None:
        if self._writer is None and (self._pending_decisions or self._pending_snapshots):
            self._writer = asyncio.get_running_loop().create_task(self._write_back())

    async def _write_back(self) -> None:
        try:
            while self._pending_decisions or self._pending_snapshots:
                decisions, self._pending_decisions = self._pending_decisions, []
                snapshots, self._pending_snapshots = self._pending_snapshots, {}
                try:
                    await self.store.write_back(decisions, snapshots, self._windows_key)
                except RedisError as exc:
                    log.warning("shard %d: write-back failed, retrying: %s", self.shard_index, exc)
                    self._pending_decisions[:0] = decisions
                    overflow = len(self._pending_decisions) - MAX_PENDING_DECISIONS
                    if overflow > 0:
                        log.error("shard %d: dropping %d unwritten decisions", self.shard_index, overflow)
                        del self._pending_decisions[:overflow]
                    # A newer snapshot queued meanwhile supersedes the failed one.
                    self._pending_snapshots = {**snapshots, **self._pending_snapshots}
                    await asyncio.sleep(WRITE_BACK_RETRY_SECONDS)
        finally:
            self._writer = None
