"""Feedback ingest: THE one way an entry reaches a user's feedback log and policy.

A caller's event is joined to its decision (``join``) and judged by the quality rules; the
service's window close is built from the decision whose window is over. Both then go through
``Ingest._ingest``: made durable in Redis (``Store.record_feedback``) *before* it is applied, the
ledger entries a snapshot stored in Redis that learning needs fetched back (``state/settled.py``),
then learned in log order (``UserState.learn``, the population prior, real-time activity), and
the user's snapshot is written behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager

from rewardloop.learning.bandits import Policy
from rewardloop.learning.rewards import BurstDetector, Event, EventContext, Signal, assess, fuse
from rewardloop.learning.rewards.ledger import Applied
from rewardloop.learning.surface import SurfaceConfig
from rewardloop.state import settled
from rewardloop.state.priors import Priors
from rewardloop.state.records import WINDOW_CLOSE_ID, DecisionRecord, FeedbackRecord
from rewardloop.state.store import Seen, Store
from rewardloop.state.user_state import UserState
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.decisions import RecentDecisions
from rewardloop.workers.messages import FeedbackCall, Recorded, Rejected
from rewardloop.workers.write_behind import WriteBehind


class UserLocks:
    """Batches of disjoint users go through at once; a batch that shares a user with one under way
    waits for it to end. A user's log order and the order its state learns in must agree, or a
    snapshot could claim a log position it does not cover: so one batch at a time per user. (One
    batch at a time per shard held each batch behind the previous one's fsync.)

    >>> async def demo():
    ...     locks, order = UserLocks(), []
    ...     async def batch(name, users, pause):
    ...         async with locks.held(users):
    ...             order.append(f"{name}+")
    ...             await asyncio.sleep(pause)
    ...             order.append(f"{name}-")
    ...     await asyncio.gather(batch("a", {"u1"}, 0.02), batch("b", {"u2"}, 0.0), batch("c", {"u1", "u3"}, 0.0))
    ...     return order
    >>> asyncio.run(demo())
    ['a+', 'b+', 'b-', 'a-', 'c+', 'c-']
    """

    def __init__(self) -> None:
        self._busy: set[str] = set()
        self._freed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def held(self, users: Collection[str]) -> AsyncIterator[None]:
        async with self._freed:
            await self._freed.wait_for(lambda: self._busy.isdisjoint(users))
            self._busy.update(users)
        try:
            yield
        finally:
            self._busy.difference_update(users)
            async with self._freed:
                self._freed.notify_all()

    def __len__(self) -> int:
        """Users held by batches under way."""
        return len(self._busy)


class Ingest:
    """Feedback events and window closes of one shard; batches run at once unless they share users."""

    def __init__(
        self,
        config: ServiceConfig,
        policies: Mapping[str, Policy],
        priors: Priors,
        store: Store,
        hold: Callable[[set[str]], AbstractAsyncContextManager[dict[str, UserState]]],
        decisions: RecentDecisions,
        write_behind: WriteBehind,
        on_session_end: Callable[[UserState, str, str, int], Awaitable[bool]] | None = None,
        on_learned: Callable[[list[FeedbackRecord]], Awaitable[None]] | None = None,
        surfaces: Mapping[str, SurfaceConfig] | None = None,
    ):
        self._config = config
        # The configured surfaces, and the policy-experiment variants' the shard serves (by their key).
        self._surfaces: Mapping[str, SurfaceConfig] = config.surfaces if surfaces is None else surfaces
        self._policies = policies
        self._priors = priors
        self._store = store
        self._hold = hold
        self._decisions = decisions
        self._write_behind = write_behind
        self._uses_realtime = any(s.features.realtime for s in self._surfaces.values())
        self._locks = UserLocks()
        # An agent surface's end signal (``agents.AgentSurface.end``): (user, surface, decision, now).
        self._on_session_end = on_session_end
        # Caller events just learned, for experiment metrics (``experiment_metrics.ExperimentAttribution``).
        self._on_learned = on_learned

    async def record(self, calls: Sequence[FeedbackCall]) -> list[Recorded | Rejected]:
        """Callers' events: each joined to its decision, then ingested; in the calls' order."""
        async with self._locks.held({c.pseudonym for c in calls}):
            known = await self._decisions.find([(c.pseudonym, c.decision_id) for c in calls if c.decision_id])
            joined = [join(c, known.get((c.pseudonym, c.decision_id)), self._surfaces) for c in calls]
            accepted = [r for r in joined if not isinstance(r, Rejected)]
            async with self._hold({r.pseudonym for r in accepted}) as users:
                outcomes = await self._ingest(users, accepted)
        ingested = iter(outcomes)
        return [r if isinstance(r, Rejected) else next(ingested) for r in joined]

    async def close(self, due: Sequence[tuple[str, str]]) -> int:
        """Window closes of (pseudonym, decision_id) pairs whose window is over: one entry per decision
        that has items not learned yet; the number of entries newly written."""
        decisions = (await self._decisions.find(due)).values()
        pseudonyms = {d.pseudonym for d in decisions}
        async with self._locks.held(pseudonyms), self._hold(pseudonyms) as users:
            await settled.fetch(  # for needs_close
                self._store.redis,
                users,
                lambda: (w for d in decisions for w in settled.wanted_items(users[d.pseudonym], d, self._surfaces)),
                self._surfaces,
            )
            closes = [
                close
                for decision in decisions
                if decision.state_key in self._surfaces  # configured, or a variant still served
                and (close := self._window_close(users[decision.pseudonym], decision)) is not None
            ]
            if not closes:
                return 0
            outcomes = await self._ingest(users, closes)
        return sum(not o.duplicate for o in outcomes)

    async def _ingest(self, users: dict[str, UserState], records: list[FeedbackRecord]) -> list[Recorded]:
        """The one way an entry reaches the feedback log and the user's policy: a caller's event
        (joined) and the service's window close alike. Caller events are judged by the quality
        rules first; window closes are the service's own and are not."""
        bursts = {p: users[p].bursts.to_lists() for p in users}
        now_ms = int(time.time() * 1000)
        records = [r if r.window_close else self._assess(users[r.pseudonym], r, now_ms) for r in records]
        outcomes: list[Recorded] = []
        learned: list[FeedbackRecord] = []
        # ``users`` are held (users.py): after an error here, they are rebuilt from Redis.
        stream_ids = await self._store.record_feedback(records)
        # The last await before learning: the entries stored apart that learning needs come back.
        await settled.fetch(
            self._store.redis,
            users,
            lambda: (w for r in records for w in settled.wanted(users[r.pseudonym], r, self._surfaces)),
            self._surfaces,
        )
        self._recount_actions(users, bursts, list(zip(records, stream_ids, strict=True)))
        for record, logged in zip(records, stream_ids, strict=True):
            state = users[record.pseudonym]
            if isinstance(logged, Seen):  # already logged: a retry, or a close made before a crash
                reward, flag = _retry_outcome(state, record, logged)
                outcomes.append(Recorded(True, reward, flag))
                if not (record.window_close or flag):  # attributed unless it was (the user's mark)
                    learned.append(record.appended(logged.stream_id))
            else:
                applied = self._learn(state, record.appended(logged))
                outcomes.append(Recorded(duplicate=False, reward=applied.reward, flag=applied.flag))
                if not (record.window_close or record.flag or applied.flag):
                    learned.append(record.appended(logged))
        self._write_behind.schedule()
        if self._on_learned is not None:
            await self._on_learned(learned)
        if self._on_session_end is not None:
            # After learning, so the session's last step takes its reward. A retry ends it too (the
            # original may have been logged by a shard that died before ending it); ending is idempotent.
            for record in records:
                if record.signal == Signal.SESSION_END and record.value and record.decision_id and not record.flag:
                    await self._on_session_end(users[record.pseudonym], record.surface, record.decision_id, now_ms)
        return outcomes

    def _assess(self, state: UserState, record: FeedbackRecord, now_ms: int) -> FeedbackRecord:
        """The record with its quality flag (quality.py); counts it as one of the user's actions."""
        burst = state.observe_action(record)
        unknown = bool(record.decision_id) and not record.decided_at_ms
        context = EventContext(decision_known=not unknown, burst=burst)
        verdict = assess(record.event(received_at_ms=now_ms), context, self._config.quality)
        return dataclasses.replace(record, flag=verdict.reason) if verdict.reason else record

    @staticmethod
    def _recount_actions(
        users: dict[str, UserState],
        before: dict[str, dict[str, list[int]]],
        written: list[tuple[FeedbackRecord, str | Seen]],
    ) -> None:
        """A duplicate was counted as an action by ``_assess``; recount those users' actions without it."""
        redo = {r.pseudonym for r, logged in written if isinstance(logged, Seen)}
        for pseudonym in redo:
            users[pseudonym].bursts = BurstDetector.from_lists(before[pseudonym], users[pseudonym].bursts.config)
        for record, logged in written:
            if not isinstance(logged, Seen) and record.pseudonym in redo:
                users[record.pseudonym].observe_action(record)

    def _learn(self, state: UserState, logged: FeedbackRecord) -> Applied:
        """Apply an entry just appended: the user's policy, the population prior, real-time activity."""
        applied = state.learn(self._policies, self._surfaces, logged)
        if self._uses_realtime:
            state.observe_feedback(self._config.realtime, logged)
        if applied is None:
            applied = Applied(0.0, "")
        for change in applied.changes:
            self._priors.learned.touched(change.surface, state.pseudonym, state.policies[change.surface])
            propensity = change.propensity or None
            if change.old is None:
                self._priors.learn(
                    change.surface, change.segment, change.arm, change.new, change.context, propensity, change.at_ms
                )
            else:
                self._priors.revise(
                    change.surface, change.segment, change.arm, change.old, change.new, change.context, propensity,
                    change.at_ms,
                )  # fmt: skip
        state.last_id = logged.stream_id
        state.since_snapshot += 1
        if state.since_snapshot >= self._config.snapshot_every:
            self._write_behind.snapshot(state)
        else:
            self._write_behind.learned(state)
        return applied

    def _window_close(self, state: UserState, decision: DecisionRecord) -> FeedbackRecord | None:
        """The decision's window-close entry: the items the user's ledger has not learned yet (None: none)."""
        surface = self._surfaces[decision.surface]
        closes = tuple(
            (item, propensity)
            for item, propensity in zip(decision.items, decision.propensities, strict=True)
            if item in surface.index and state.ledger.needs_close(decision.state_key, decision.decision_id, item)
        )
        if not closes:
            return None
        return FeedbackRecord(
            pseudonym=decision.pseudonym,
            event_id=WINDOW_CLOSE_ID.format(decision.decision_id),
            surface=decision.surface,
            item_id="",
            reward=surface.reward.default_reward,
            signal=Signal.IMPRESSION.value,
            occurred_at_ms=decision.decided_at_ms + surface.reward.window_ms,
            decision_id=decision.decision_id,
            features=decision.feature_bytes(),
            segment=decision.segment,
            decided_at_ms=decision.decided_at_ms,
            window_close=True,
            closes=closes,
            policy_key=decision.policy_key,
        )


def _retry_outcome(state: UserState, record: FeedbackRecord, seen: Seen) -> tuple[float, str]:
    """What a retry answers (in batch order, so as of its place in the batch): the original's
    reward and flag. A flagged original trained nothing and is answered as such; otherwise the
    ledger knows the decision-item's reward so far (``record.reward`` for an event without one)."""
    if seen.flag:
        return 0.0, seen.flag
    known = state.ledger.outcome_of(record.state_key, record.decision_id, record.item_id, record.event_id)
    return (record.reward, "") if known is None else (known.reward, known.flag)


def join(
    call: FeedbackCall, decision: DecisionRecord | None, surfaces: Mapping[str, SurfaceConfig]
) -> FeedbackRecord | Rejected:
    """The caller's event joined to its decision (``None``: not found, or none named), or why it
    cannot be: the decision is unknown, or surface or item do not match it or the configuration."""
    features, propensity, segment, decided_at_ms, policy_key = b"", 0.0, "", 0, ""
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
        policy_key = decision.policy_key
    surface = surfaces.get(surface_name)
    if surface is None:
        return Rejected("NOT_FOUND", f"surface {surface_name!r} is not configured", "surface")
    if call.item_id not in surface.index:
        return Rejected("INVALID_ARGUMENT", f"item_id {call.item_id!r} is not in surface {surface_name!r}", "item_id")
    return FeedbackRecord(
        pseudonym=call.pseudonym,
        event_id=call.event_id,
        surface=surface_name,
        item_id=call.item_id,
        # The event's own reward; with a decision, the fused reward is what trains.
        reward=fuse([Event(call.event_id, Signal(call.signal), call.value, call.occurred_at_ms, 0)], surface.reward),
        signal=call.signal,
        value=call.value,
        occurred_at_ms=call.occurred_at_ms,
        decision_id=call.decision_id,
        features=features,
        propensity=propensity,
        segment=segment,
        decided_at_ms=decided_at_ms,
        policy_key=policy_key,
    )
