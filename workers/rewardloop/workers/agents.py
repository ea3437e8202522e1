"""Agent surfaces in the shard: sessions, decisions by the served policy, transitions for the trainer.

A user's session on an agent surface (``learning/agents/session.py``) is kept in Redis (one hash
per user, ``UserKeys.sessions``, a field per surface) with its *pending step*: the last decision's
state, action, id and version, waiting for its reward and for the state that follows. A decision:

1. settles the pending step: its reward is what the user's reward ledger holds for the decision
   and action (fused from the Feedback API's signals; the surface's ``default_reward`` when none
   came), which also moves the session's satisfaction;
2. builds the state ``[request features, session features]`` and asks the surface's policy
   (``PolicySource``: the Serve replicas, ``policy_replicas.py``) for its Q-values, then explores
   with the user's seeded RNG (the learner's rule at the published transition count), so the
   propensity is exact and the version is the one that answered;
3. writes, in one Redis transaction and before answering, the settled step as a transition
   ``(state, action, reward, next state, done=False)`` on the surface's stream
   (``state/transitions.py``) and the session with its new pending step.

A session ends on the caller's ``SESSION_END`` signal about its last decision (``end``), or after
``idle_timeout`` without a decision: each shard keeps a sorted set of its open sessions by expiry
(``expiry_key``) and closes the due ones (``expire_due``); a decision after the timeout closes the
old session first. Either way the pending step becomes a transition with ``done=True``.

Nothing is lost when a shard dies: the pending step is durable before the decision is answered,
feedback before it is acknowledged, and a replayed user rebuilds its ledger. A crash between the
transaction and the answer leaves a pending step whose transition may be appended again by a
retry; it carries the same decision id, and the trainer skips ids it learned from.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import redis.asyncio as aioredis

from rewardloop.learning.agents.exploration import choose
from rewardloop.learning.agents.session import Session, SessionConfig
from rewardloop.learning.surface import SurfaceConfig
from rewardloop.state.keys import KEY_PREFIX, UserKeys, new_decision_id
from rewardloop.state.records import DecisionRecord
from rewardloop.state.transitions import MAX_ENTRIES, TransitionRecord, transitions_key
from rewardloop.state.user_state import UserState
from rewardloop.workers.feedback import UserLocks
from rewardloop.workers.messages import ChosenItem, Decision, RecommendCall, Rejected

log = logging.getLogger(__name__)

CACHED_SESSIONS = 20_000
"""Open sessions a shard keeps in memory per agent surface (~0.5 KB each); the rest are read from Redis."""
EXPIRE_BATCH = 256


def expiry_key(shard_index: int) -> str:
    """Sorted set of the shard's open agent sessions (``"<surface> <pseudonym>"``) by expiry (Unix ms)."""
    return f"{KEY_PREFIX}sessions:{shard_index}"


class PolicySource(Protocol):
    async def q_values_many(self, states: list[list[float]]) -> tuple[int, list[list[float]], int]:
        """The states' Q-values, from one published version: the version, the rows, its transition count."""
        ...


@dataclass
class Step:
    """A session's last decision, waiting for its reward and the state after it."""

    decision_id: str
    state: tuple[float, ...]
    action: int
    model_version: str
    decided_at_ms: int


@dataclass
class OpenSession:
    session: Session
    pending: Step | None = None

    def to_bytes(self) -> bytes:
        pending = None if self.pending is None else self.pending.__dict__ | {"state": list(self.pending.state)}
        return json.dumps({"session": base64.b64encode(self.session.to_bytes()).decode(), "pending": pending}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> OpenSession:
        raw = json.loads(data)
        pending = raw["pending"]
        step = None if pending is None else Step(**(pending | {"state": tuple(pending["state"])}))
        return cls(Session.from_bytes(base64.b64decode(raw["session"])), step)


class AgentSurface:
    """One agent surface of one shard."""

    def __init__(self, surface: SurfaceConfig, redis: aioredis.Redis, shard_index: int, policy: PolicySource,
                 retention_seconds: int):  # fmt: skip
        self.surface = surface
        self.spec = surface.spec
        self.config: SessionConfig = self.spec.session
        self.exploration = self.spec.dqn_config(surface.context_dim, len(surface.items)).exploration
        self.redis = redis
        self.policy = policy
        self.expiry_key = expiry_key(shard_index)
        self.retention_seconds = retention_seconds
        self.state_size = self.spec.observation_size(surface.context_dim, len(surface.items))
        self._locks = UserLocks()
        self._cache: OrderedDict[str, OpenSession | None] = OrderedDict()
        self.counts = {"transitions": 0, "ended": 0, "expired": 0}

    # -- decisions ------------------------------------------------------------------------

    async def decide(
        self, call: RecommendCall, user: UserState, now_ms: int
    ) -> tuple[Decision, DecisionRecord] | Rejected:
        return (await self.decide_many([call], {call.pseudonym: user}, now_ms))[0]

    async def decide_many(
        self, calls: Sequence[RecommendCall], users: Mapping[str, UserState], now_ms: int
    ) -> list[tuple[Decision, DecisionRecord] | Rejected]:
        """The calls' decisions, in order: one policy call and one Redis transaction per round of
        distinct users (a user asking twice in one batch is answered in turn)."""
        out: list[tuple[Decision, DecisionRecord] | Rejected | None] = [None] * len(calls)
        rounds: list[dict[str, int]] = []
        for i, call in enumerate(calls):
            if call.n > 1:
                problem = f"n: an agent surface chooses one action per turn, got {call.n}"
                out[i] = Rejected("INVALID_ARGUMENT", problem, "n")
                continue
            free = next((r for r in rounds if call.pseudonym not in r), None)
            if free is None:
                rounds.append(free := {})
            free[call.pseudonym] = i
        for round_ in rounds:
            decided = await self._decide_round([calls[i] for i in round_.values()], users, now_ms)
            for i, result in zip(round_.values(), decided, strict=True):
                out[i] = result
        return [r for r in out if r is not None]

    async def _decide_round(
        self, calls: Sequence[RecommendCall], users: Mapping[str, UserState], now_ms: int
    ) -> list[tuple[Decision, DecisionRecord]]:
        async with self._held({c.pseudonym for c in calls}):
            opens = await self._load_many([c.pseudonym for c in calls])
            writes: list[tuple[str, OpenSession | None, list[TransitionRecord]]] = []
            states = []
            for call in calls:
                user, open_ = users[call.pseudonym], opens[call.pseudonym]
                done: list[TransitionRecord] = []
                if open_ is not None and open_.session.expired(self.config, now_ms):
                    done += self._close(open_, user, now_ms)
                    open_ = None
                if open_ is None:
                    open_ = OpenSession(Session.start(now_ms, len(self.surface.items)))
                reward = self._settle(open_, user, now_ms)
                state = tuple(call.features) + tuple(open_.session.features(self.config, now_ms).tolist())
                if open_.pending is not None:
                    done.append(self._transition(open_.pending, reward, state, terminal=False))
                states.append(state)
                writes.append((call.pseudonym, open_, done))
            version, rows, transitions = await self.policy.q_values_many([list(s) for s in states])
            model_version = f"{self.surface.fingerprint}.v{version}"
            decided = []
            for call, state, q, (_, open_, _) in zip(calls, states, rows, writes, strict=True):
                assert open_ is not None
                user = users[call.pseudonym]
                decided.append(self._choose(call, user, open_, state, q, model_version, transitions, now_ms))
            await self._write(writes)
        return decided

    def _choose(
        self, call: RecommendCall, user: UserState, open_: OpenSession, state: tuple[float, ...], q: list[float],
        model_version: str, transitions: int, now_ms: int,
    ) -> tuple[Decision, DecisionRecord]:  # fmt: skip
        """Explore from the Q-values with the user's RNG; the session takes the decision as pending."""
        values = np.asarray(q, dtype=np.float64)
        if call.candidates:
            allowed = np.zeros(len(self.surface.items), dtype=bool)
            allowed[[self.surface.index[c] for c in call.candidates]] = True
            probabilities = self._masked(values, allowed, transitions)
        else:
            probabilities = self.exploration.probabilities(values, transitions)
        action, propensity = choose(probabilities, user.rng)
        decision_id = new_decision_id(now_ms)
        open_.session.decided(action, now_ms)
        open_.pending = Step(decision_id, state, action, model_version, now_ms)
        item = self.surface.items[action]
        decision = Decision(decision_id, (ChosenItem(item, float(q[action]), propensity, 0),), "dqn", model_version)
        record = DecisionRecord(
            pseudonym=call.pseudonym, decision_id=decision_id, surface=self.surface.name, items=(item,),
            propensities=(propensity,), policy="dqn", model_version=model_version, decided_at_ms=now_ms,
            closes_at_ms=now_ms + self.surface.reward.window_ms, features=state, segment=call.segment,
        )  # fmt: skip
        return decision, record

    def _masked(self, q: np.ndarray, allowed: np.ndarray, transitions: int) -> np.ndarray:
        """The exploration rule over the allowed actions only (the others get probability 0)."""
        inner = self.exploration.probabilities(q[allowed], transitions)
        out = np.zeros_like(q)
        out[allowed] = inner
        return out

    async def end(self, user: UserState, decision_id: str, now_ms: int) -> bool:
        """The caller's end signal about ``decision_id``: ends the session if that is its last decision."""
        async with self._held({user.pseudonym}):
            open_ = await self._load(user.pseudonym)
            if open_ is None or open_.pending is None or open_.pending.decision_id != decision_id:
                return False  # a stale signal: the session went on (or ended) since
            await self._write([(user.pseudonym, None, self._close(open_, user, now_ms))])
            self.counts["ended"] += 1
            return True

    async def expire(self, user: UserState, now_ms: int) -> bool:
        """Close the user's session if it has been idle for the timeout (``expire_due`` found it due)."""
        async with self._held({user.pseudonym}):
            open_ = await self._load(user.pseudonym)
            if open_ is not None and not open_.session.expired(self.config, now_ms):
                await self.redis.zadd(self.expiry_key, {self._member(user.pseudonym): self._expires(open_)})
                return False
            done = [] if open_ is None else self._close(open_, user, now_ms)
            await self._write([(user.pseudonym, None, done)])
            self.counts["expired"] += open_ is not None
            return open_ is not None

    # -- the pieces -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _held(self, pseudonyms: set[str]) -> AsyncIterator[None]:
        """One call at a time per user; a call that fails forgets its users' sessions in memory (it
        may have changed them without writing them), so the next one reads what Redis holds."""
        async with self._locks.held(pseudonyms):
            try:
                yield
            except BaseException:
                for pseudonym in pseudonyms:
                    self._cache.pop(pseudonym, None)
                raise

    def _settle(self, open_: OpenSession, user: UserState, now_ms: int) -> float:
        """The pending step's reward so far (the ledger's; the default without feedback), counted in
        the session's satisfaction."""
        if open_.pending is None:
            return 0.0
        step = open_.pending
        known = user.ledger.outcome_of(self.surface.name, step.decision_id, self.surface.items[step.action], "")
        reward = self.surface.reward.default_reward if known is None else known.reward
        open_.session.rewarded(reward, now_ms, self.config)
        return reward

    def _close(self, open_: OpenSession, user: UserState, now_ms: int) -> list[TransitionRecord]:
        """The session's last step as a terminal transition (none if it has no pending step)."""
        if open_.pending is None:
            return []
        reward = self._settle(open_, user, now_ms)
        return [self._transition(open_.pending, reward, (0.0,) * self.state_size, terminal=True)]

    @staticmethod
    def _transition(step: Step, reward: float, next_state: tuple[float, ...], terminal: bool) -> TransitionRecord:
        return TransitionRecord(
            step.decision_id, step.state, step.action, reward, next_state, terminal, step.model_version,
            step.decided_at_ms,
        )  # fmt: skip

    def _member(self, pseudonym: str) -> str:
        return f"{self.surface.name} {pseudonym}"

    def _expires(self, open_: OpenSession) -> int:
        return open_.session.last_ms + self.config.idle_timeout_ms

    async def _load(self, pseudonym: str) -> OpenSession | None:
        return (await self._load_many([pseudonym]))[pseudonym]

    async def _load_many(self, pseudonyms: Sequence[str]) -> dict[str, OpenSession | None]:
        """The users' open sessions: from memory, the rest in one round trip."""
        found: dict[str, OpenSession | None] = {}
        missing = []
        for pseudonym in pseudonyms:
            if pseudonym in self._cache:
                self._cache.move_to_end(pseudonym)
                found[pseudonym] = self._cache[pseudonym]
            else:
                missing.append(pseudonym)
        if missing:
            pipe = self.redis.pipeline(transaction=False)
            for pseudonym in missing:
                pipe.hget(UserKeys(pseudonym).sessions, self.surface.name)
            for pseudonym, raw in zip(missing, await pipe.execute(), strict=True):
                open_ = None if raw is None else OpenSession.from_bytes(raw if isinstance(raw, bytes) else raw.encode())
                self._remember(pseudonym, open_)
                found[pseudonym] = open_
        return found

    def _remember(self, pseudonym: str, open_: OpenSession | None) -> None:
        self._cache[pseudonym] = open_
        self._cache.move_to_end(pseudonym)
        while len(self._cache) > CACHED_SESSIONS:
            self._cache.popitem(last=False)

    async def _write(self, writes: Sequence[tuple[str, OpenSession | None, Sequence[TransitionRecord]]]) -> None:
        """Per user: transitions, then the session (``None``: ended); all in one transaction, before
        anyone is answered."""
        pipe = self.redis.pipeline(transaction=True)
        for pseudonym, open_, done in writes:
            keys = UserKeys(pseudonym)
            for record in done:
                fields: Any = record.fields()
                pipe.xadd(transitions_key(self.surface.name), fields, maxlen=MAX_ENTRIES, approximate=True)
            if open_ is None:
                pipe.hdel(keys.sessions, self.surface.name)
                pipe.zrem(self.expiry_key, self._member(pseudonym))
            else:
                pipe.hset(keys.sessions, self.surface.name, open_.to_bytes())
                pipe.expire(keys.sessions, self.retention_seconds)
                pipe.zadd(self.expiry_key, {self._member(pseudonym): self._expires(open_)})
        await pipe.execute()
        for pseudonym, open_, done in writes:
            self._remember(pseudonym, open_)
            self.counts["transitions"] += len(done)

    def stats(self) -> dict[str, int]:
        return {"cached_sessions": len(self._cache), **self.counts}


async def due_sessions(redis: aioredis.Redis, shard_index: int, now_ms: int) -> list[tuple[str, str]]:
    """(surface, pseudonym) of the shard's sessions idle past their timeout, oldest first (up to ``EXPIRE_BATCH``)."""
    members: list[Any] = await redis.zrangebyscore(expiry_key(shard_index), "-inf", now_ms, start=0, num=EXPIRE_BATCH)
    due = []
    for member in members:
        surface, _, pseudonym = (member.decode() if isinstance(member, bytes) else str(member)).partition(" ")
        due.append((surface, pseudonym))
    return due


def app_name(surface: str) -> str:
    """The Serve application (and deployment) that serves an agent surface's policy."""
    return f"policy-{surface}"


class ServePolicy:
    """The surface's policy replicas on Ray Serve (``policy_replicas.py``), through a deployment handle."""

    def __init__(self, surface: str) -> None:
        self.surface = surface
        self._handle: Any = None

    async def q_values_many(self, states: list[list[float]]) -> tuple[int, list[list[float]], int]:
        """One handle call for the shard's whole batch (a Serve hop costs ~8 ms of CPU across the two
        processes, far more than the forward pass: bench/README.md)."""
        if self._handle is None:
            from ray import serve

            name = app_name(self.surface)
            self._handle = serve.get_deployment_handle(name, app_name=name)
        version, rows, transitions = await self._handle.q_values_many.remote(states)
        return int(version), rows, int(transitions)


class LocalPolicy:
    """The surface's published policy in this process (no Serve): a shard outside a Ray cluster, and
    the bare forward pass the benchmark compares the replicas with. Reloads a newer version at most
    every ``poll_seconds``."""

    def __init__(self, redis: aioredis.Redis, surface: SurfaceConfig, poll_seconds: float = 0.1) -> None:
        import torch

        from rewardloop.learning.agents.dqn import build_network

        torch.set_num_threads(1)
        self.redis = redis
        self.surface = surface.name
        self.config = surface.spec.dqn_config(surface.context_dim, len(surface.items))
        self.model: tuple[int, Any, int] = (0, build_network(self.config, self.config.seed).eval(), 0)
        self.poll_seconds = poll_seconds
        self._checked = -1.0

    async def q_values_many(self, states: list[list[float]]) -> tuple[int, list[list[float]], int]:
        import time

        import torch

        from rewardloop.workers.policy_replicas import load_model
        from rewardloop.workers.trainer import weights_key

        now = time.monotonic()
        if now - self._checked >= self.poll_seconds:
            self._checked = now
            published = await self.redis.hget(weights_key(self.surface), "version")
            if published is not None and int(published) > self.model[0]:
                self.model = load_model(self.config, await self.redis.hgetall(weights_key(self.surface)))
        version, network, transitions = self.model
        with torch.inference_mode():
            rows = network(torch.as_tensor(np.asarray(states, dtype=np.float32))).tolist()
        return version, rows, transitions
