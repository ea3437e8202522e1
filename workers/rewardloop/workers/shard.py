"""The shard: sole owner of the state of the users hashed to it.

Each user's policy states live here in memory, rebuilt from Redis on first touch
(snapshot + feedback-log replay). Feedback is made durable in Redis *before* it is
applied and acknowledged; decisions and snapshots are written behind, off the request
path. `ShardCore` is plain asyncio code, testable without Ray; `workers.cluster` hosts
it as a Ray actor. It is the facade over its parts:

- ``users.UserCache``: the users in memory, loaded with bounded concurrency;
- ``kinds``: what decides on each surface (the decision seam, by ``SurfaceConfig.kind``);
- ``variant_policies.VariantPolicies``: a policy-experiment variant's policy, deciding a surface for its users;
- ``agents.AgentSurface``: an agent surface's sessions, its policy's decisions, its transitions;
- ``decisions.RecentDecisions``: the decisions feedback joins to;
- ``feedback.Ingest``: the one ingest path of feedback events and window closes;
- ``windows.RewardWindows``: closing windows that got no reward;
- ``write_behind.WriteBehind``: decisions and snapshots written off the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from opentelemetry import propagate, trace
from redis.exceptions import RedisError

from rewardloop.learning.bandits import Policy, make_policy
from rewardloop.learning.surface import SurfaceConfig, longest_window_ms
from rewardloop.state import loops
from rewardloop.state.keys import windows_key
from rewardloop.state.priors import Priors
from rewardloop.state.records import DecisionRecord
from rewardloop.state.snapshots import encode_snapshot
from rewardloop.state.store import Store
from rewardloop.state.user_state import UserState
from rewardloop.workers.agents import EXPIRE_BATCH, AgentSurface, LocalPolicy, PolicySource, due_sessions
from rewardloop.workers.agents import expiry_key as agent_expiry_key
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.decisions import RecentDecisions
from rewardloop.workers.experiment_metrics import ExperimentAttribution
from rewardloop.workers.feedback import Ingest
from rewardloop.workers.kinds import KINDS, SurfaceKind
from rewardloop.workers.messages import Decision, FeedbackCall, RecommendCall, Recorded, Rejected
from rewardloop.workers.users import UserCache
from rewardloop.workers.variant_policies import VariantPolicies
from rewardloop.workers.windows import RewardWindows
from rewardloop.workers.write_behind import WriteBehind

log = logging.getLogger(__name__)
tracer = trace.get_tracer("rewardloop.workers.shard")

PRIOR_REFRESH_SECONDS = 1.0
# The part of the memory budget that remembers recent decisions (joins without a Redis round trip).
DECISIONS_SHARE = 0.1
# How often users idle for ``write_behind.IDLE_SNAPSHOT_SECONDS`` are looked for.
IDLE_SWEEP_SECONDS = 5.0
# How often agent sessions idle past their timeout are closed.
SESSION_SWEEP_SECONDS = 1.0
EXPERIMENTS_REFRESH_SECONDS = 1.0
# How often a call naming an experiment the catalogue does not hold yet may refresh it.
EXPERIMENTS_RECHECK_SECONDS = 0.1
AGENT_STATS = ("cached_sessions", "transitions", "ended", "expired")


class ShardCore:
    def __init__(
        self,
        config: ServiceConfig,
        redis_url: str,
        shard_index: int = 0,
        policy_source: Callable[[SurfaceConfig], PolicySource] | None = None,
    ):
        self.config = config
        self.shard_index = shard_index
        # Tells one incarnation of the shard from the next (Ray restarts it after a crash).
        self.incarnation = uuid.uuid4().hex
        self.store = Store(redis_url, config.retention, config.join_ms, settled_ms=config.settled_ms)
        self.surfaces: dict[str, SurfaceConfig] = dict(config.surfaces)
        self.policies: dict[str, Policy] = {
            name: make_policy(
                s.policy_config, len(s.items), context_dim=s.context_dim, arm_features=s.item_feature_matrix()
            )
            for name, s in self.surfaces.items()
        }
        self.priors = Priors(
            self.surfaces, self.policies, shard_index, config.shards, config.retention.user_state_seconds
        )
        # An agent surface's policy: the Serve replicas in a cluster, else the published one in-process.
        source = policy_source or (lambda s: LocalPolicy(self.store.redis, s))
        self.agents = {
            name: AgentSurface(s, self.store.redis, shard_index, source(s), config.retention.user_state_seconds)
            for name, s in self.surfaces.items()
            if s.kind == "agent"
        }
        self._kinds: dict[str, SurfaceKind] = {
            name: self.agents[name] if s.kind == "agent" else KINDS[s.kind](s, self.policies[name], self.priors)
            for name, s in self.surfaces.items()
        }
        # Users' real-time activity is kept (and rebuilt on load) only when some surface uses it.
        self._uses_realtime = any(s.features.realtime for s in self.surfaces.values())
        encode = functools.partial(encode_snapshot, policies=self.policies, surfaces=self.surfaces)
        self.write_behind = WriteBehind(self.store, windows_key(shard_index), shard_index, encode, self.surfaces)
        budget = config.memory_budget_mb * 2**20
        self.users = UserCache(
            self.store, config, self.policies, self.surfaces,
            on_evict=self.write_behind.snapshot, on_distrust=self.write_behind.forget,
            on_replayed=self.write_behind.learned, budget=budget - int(budget * DECISIONS_SHARE),
            written=self.write_behind.written,
        )  # fmt: skip
        horizon_ms = longest_window_ms(self.surfaces.values())
        self.decisions = RecentDecisions(self.store, int(budget * DECISIONS_SHARE), horizon_ms)
        self.experiments = ExperimentAttribution(redis_url, self.store.redis)
        # Adds and removes the policy-experiment variants' entries of ``self.surfaces`` and ``self.policies``.
        self.variants = VariantPolicies(
            config.surfaces, self.surfaces, self.policies, self.priors, self.experiments.catalog
        )
        self._experiments_checked = 0.0
        self.ingest = Ingest(
            config, self.policies, self.priors, self.store, self._held, self.decisions, self.write_behind,
            on_session_end=self._end_session, on_learned=self.experiments.observe, surfaces=self.surfaces,
        )  # fmt: skip
        self.windows = RewardWindows(self.store, self.ingest, shard_index, config.shards)
        self._prior_task: asyncio.Task[None] | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._window_task: asyncio.Task[None] | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._experiments_task: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None

    # -- requests ---------------------------------------------------------------------

    async def recommend(self, calls: Sequence[RecommendCall]) -> list[Decision | Rejected]:
        users = await self._users({c.pseudonym for c in calls})
        if any(self.variants.unknown(c) for c in calls):
            await self._experiment_started()
        decisions: list[Decision | Rejected | None] = [None] * len(calls)
        # An agent surface's calls go together: one policy call and one Redis transaction for them
        # (but a policy experiment's bandit decides one action for its variant's users).
        by_agent: dict[str, list[int]] = {}
        for i, call in enumerate(calls):
            if call.surface in self.agents and (call.n != 1 or self.variants.deciding(call) is None):
                by_agent.setdefault(call.surface, []).append(i)
            else:
                decisions[i] = await self._decide(call, users[call.pseudonym])
        if by_agent:
            agents = (self._decide_agent(name, calls, at, users, decisions) for name, at in by_agent.items())
            await asyncio.gather(*agents)
        self.users.resized(users.values())  # real-time activity grew
        return [d for d in decisions if d is not None]

    async def _decide_agent(
        self,
        surface: str,
        calls: Sequence[RecommendCall],
        at: list[int],
        users: dict[str, UserState],
        decisions: list[Decision | Rejected | None],
    ) -> None:
        """The agent surface's calls among ``calls`` (their indexes ``at``), decided into ``decisions``."""
        with tracer.start_as_current_span(
            "shard.agent_recommend", attributes={"rewardloop.surface": surface, "rewardloop.calls": len(at)}
        ):
            now_ms = int(time.time() * 1000)
            mine = [calls[i] for i in at]
            decided = await self.agents[surface].decide_many(mine, users, now_ms)
        for i, call, result in zip(at, mine, decided, strict=True):
            decisions[i] = result if isinstance(result, Rejected) else self._recorded(result, users[call.pseudonym])

    def stats(self) -> dict[str, float]:
        """What the shard holds, for the front's metrics: accounted bytes (users + recent decisions)
        against the budget, users in memory, evictions so far, users with unsnapshotted events."""
        return {
            "bytes": self.users.bytes + self.decisions.bytes,
            "budget_bytes": self.config.memory_budget_mb * 2**20,
            "users": len(self.users),
            "evictions": self.users.evictions,
            "decisions": len(self.decisions),
            "unsnapshotted": self.write_behind.unsnapshotted,
            "variant_policies": len(self.variants),
            "attribution_failed": self.experiments.failed,
            **self.priors.learned.stats(),
            **{f"agent_{k}": float(sum(a.stats()[k] for a in self.agents.values())) for k in AGENT_STATS},
        }

    async def feedback(self, calls: Sequence[FeedbackCall]) -> list[Recorded | Rejected]:
        return await self.ingest.record(calls)

    async def user_state(self, pseudonym: str) -> dict[str, dict[str, Any]]:
        """The user's learned arrays per surface (for tests, export and debugging)."""
        state = (await self._users({pseudonym}))[pseudonym]
        return {
            name: {"n_updates": s.n_updates, **{k: v.tolist() for k, v in s.arrays.items()}}
            for name, s in state.policies.items()
        }

    async def membership(self, pseudonym: str, surface: str) -> dict[str, Any]:
        """The user's membership of the surface's learned segments (``LearnedSegments.describe``)."""
        state = (await self._users({pseudonym}))[pseudonym]
        config = self.surfaces[surface]
        own = state.decision_state(self.policies[surface], config, int(time.time() * 1000))
        return self.priors.learned.describe(surface, own, config.cold_start.strength)

    async def ready(self) -> tuple[int, str]:
        await self.store.redis.ping()
        await self._start()
        return self.shard_index, self.incarnation

    async def _users(self, pseudonyms: set[str]) -> dict[str, UserState]:
        """The users' states; the first call of an incarnation starts its background work."""
        if self._window_task is None:
            await self._start()
        self.variants.sync()
        return await self.users.get(pseudonyms)

    @contextlib.asynccontextmanager
    async def _held(self, pseudonyms: set[str]) -> AsyncIterator[dict[str, UserState]]:
        """``UserCache.held``, the first call of an incarnation starting its background work."""
        if self._window_task is None:
            await self._start()
        self.variants.sync()
        async with self.users.held(pseudonyms) as users:
            yield users

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
        # Before any user loads: a variant's states not known to be served would be dropped. Redis
        # down fails the start (the next call tries again); an unreadable catalogue only logs.
        try:
            await self.experiments.refresh()
        except (RedisError, OSError):
            raise
        except Exception:
            log.exception("shard %d: the experiment catalogue cannot be read", self.shard_index)
        self.variants.sync()
        if self.priors.surfaces:
            await self.priors.restore(self.store.redis)
            self._prior_task = loop.create_task(self._refresh_priors_forever())
        self._idle_task = loop.create_task(self._snapshot_idle_forever())
        self._experiments_task = loop.create_task(self._refresh_experiments_forever())
        if self.agents:
            self._session_task = loop.create_task(self._expire_sessions_forever())
        self._window_task = loop.create_task(self.windows.run())

    async def close(self) -> None:
        """Stop the background work, finish the writes behind, close Redis (a shard outside Ray)."""
        await self.stop_background()
        await self.flush()
        await self.store.close()

    async def stop_background(self) -> None:
        """Stop the prior refresh, idle snapshots, session expiry, catalogue refresh and window closes, and
        wait for them to end (``loops.stop``: a cancellation a Redis reply absorbs is repeated)."""
        background = (self._prior_task, self._idle_task, self._session_task, self._experiments_task, self._window_task)
        tasks = [t for t in background if t is not None]
        await asyncio.gather(*(loops.stop(t) for t in tasks))

    async def refresh_priors(self) -> None:
        """Publish this shard's population statistics and merge everyone's, now."""
        await self.priors.refresh(self.store.redis)

    async def _refresh_experiments_forever(self) -> None:
        """The experiment catalogue attribution reads, within a second of a change (as the front's)."""
        while loops.running():
            try:
                await self.experiments.refresh()
            except (RedisError, OSError) as exc:
                log.warning("shard %d: experiment catalogue refresh failed: %s", self.shard_index, exc)
            self.variants.sync()
            await asyncio.sleep(EXPERIMENTS_REFRESH_SECONDS)

    async def _experiment_started(self) -> None:
        """A call names an experiment the catalogue lacks: the front saw it start first. Refresh
        (at most every ``EXPERIMENTS_RECHECK_SECONDS``), so its variants' policies decide at once."""
        now = time.monotonic()
        if now - self._experiments_checked < EXPERIMENTS_RECHECK_SECONDS:
            return
        self._experiments_checked = now
        try:
            await self.experiments.refresh()
        except Exception as exc:  # the call is decided all the same, by the surface's own policy
            log.warning("shard %d: experiment catalogue refresh failed: %s", self.shard_index, exc)
        self.variants.sync()

    async def _refresh_priors_forever(self) -> None:
        while loops.running():
            await asyncio.sleep(PRIOR_REFRESH_SECONDS)
            try:
                await self.priors.refresh(self.store.redis)
            except RedisError as exc:
                log.warning("shard %d: prior refresh failed: %s", self.shard_index, exc)

    async def _snapshot_idle_forever(self) -> None:
        while loops.running():
            await asyncio.sleep(IDLE_SWEEP_SECONDS)
            self.write_behind.snapshot_idle()

    async def _expire_sessions_forever(self) -> None:
        while loops.running():
            await asyncio.sleep(SESSION_SWEEP_SECONDS)
            try:
                await self.expire_sessions()
            except RedisError as exc:
                log.warning("shard %d: session expiry failed: %s", self.shard_index, exc)

    async def expire_sessions(self, now_ms: int | None = None) -> int:
        """Close the agent sessions idle past their timeout (``agents.py``); how many closed."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        closed = 0
        while due := await due_sessions(self.store.redis, self.shard_index, now_ms):
            users = await self._users({p for _, p in due})
            for surface, pseudonym in due:
                agent = self.agents.get(surface)
                if agent is None:  # no longer configured: nothing to learn it for
                    await self.store.redis.zrem(agent_expiry_key(self.shard_index), f"{surface} {pseudonym}")
                    continue
                closed += await agent.expire(users[pseudonym], now_ms)
            if len(due) < EXPIRE_BATCH:
                break
        return closed

    async def _end_session(self, state: UserState, surface: str, decision_id: str, now_ms: int) -> bool:
        agent = self.agents.get(surface)
        return agent is not None and await agent.end(state, decision_id, now_ms)

    async def flush(self, now_ms: int | None = None) -> None:
        """Snapshot every user with unsnapshotted rewards and finish all writes behind (``now_ms``:
        what the snapshots take as now, ``WriteBehind.snapshot``)."""
        for state in self.users.values():
            if state.since_snapshot or state.dirty:
                self.write_behind.snapshot(state, now_ms)
        self.write_behind.schedule()
        await self.write_behind.drain()

    async def close_due_windows(self, now_ms: int | None = None) -> int:
        """Log and learn a window-close entry for every decision whose window is over with items
        that got no reward (``windows.RewardWindows``); the number of entries written."""
        return await self.windows.close_due(now_ms)

    # -- decisions --------------------------------------------------------------------

    async def _decide(self, call: RecommendCall, state: UserState) -> Decision | Rejected:
        """The surface's kind decides; then what every decision needs, whatever decided it."""
        parent = propagate.extract(call.trace) if call.trace else None
        with tracer.start_as_current_span(
            "shard.recommend",
            context=parent,
            attributes={"rewardloop.user": call.pseudonym, "rewardloop.surface": call.surface},
        ):
            now_ms = int(time.time() * 1000)
            kind = self.variants.deciding(call) or self._kinds[call.surface]
            decided = await kind.decide(call, state, now_ms)
        return decided if isinstance(decided, Rejected) else self._recorded(decided, state)

    def _recorded(self, decided: tuple[Decision, DecisionRecord], state: UserState) -> Decision:
        """What every decision needs, whatever decided it: remembered for joins, logged behind."""
        decision, record = decided
        if self._uses_realtime:
            state.observe_decision(self.config.realtime, record.decided_at_ms, record.items[0])
        self.decisions.remember(record)
        self.write_behind.decision(record)
        state.dirty = True  # its RNG moved on: an eviction must snapshot it
        return decision
