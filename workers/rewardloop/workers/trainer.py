"""The trainer of an agent surface: learns from the transition stream, checkpoints, publishes versions.

It reads the surface's stream (``state/transitions.py``) strictly in order from its cursor, learns
from each transition once, and every ``checkpoint_every`` transitions writes, in one Redis
transaction, the checkpoint (the learner with its replay ring, optimizer, RNG and counters, plus the
cursor, the version and the recently learned decision ids) and the weights it publishes as the
next version. Only then are the entries behind the cursor trimmed. A trainer killed at any point
restarts from its checkpoint and re-reads what came after: the transitions it had learned from
since are learned again from the same state, in the same order, so a seeded run ends with the same
weights as one that never stopped, and none is lost or learned twice.

Ray-free: the actor that hosts it (and the Serve replicas that read the published versions) only
call ``start``, ``step`` and ``checkpoint``.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis.asyncio as aioredis
import torch

from rewardloop.learning.agents.checkpoint import config_from_dict, dumps, loads
from rewardloop.learning.agents.config import DQNConfig
from rewardloop.learning.agents.dqn import DQN
from rewardloop.learning.agents.tabular import QLearning
from rewardloop.state.keys import KEY_PREFIX
from rewardloop.state.transitions import TransitionLog, TransitionRecord

SEEN_IDS = 20_000
"""Decision ids remembered to skip a transition a shard appended twice (a retry after a crash
lands within seconds, far fewer transitions than this later)."""


def checkpoint_key(surface: str) -> str:
    """String: the surface trainer's checkpoint zip (one writer: the trainer)."""
    return f"{KEY_PREFIX}trainer:{surface}"


def weights_key(surface: str) -> str:
    """Hash of the published policy: ``version``, ``weights`` (a torch ``state_dict`` or a Q-table
    as ``.npy``), ``transitions`` (the exploration schedule's step), ``published_ms``."""
    return f"{KEY_PREFIX}policy:{surface}"


@dataclass
class Progress:
    learned: int = 0
    skipped: int = 0


def policy_bytes(agent: DQN | QLearning) -> bytes:
    out = io.BytesIO()
    if isinstance(agent, DQN):
        torch.save(agent.policy_state(), out)
    else:
        np.save(out, agent.q, allow_pickle=False)
    return out.getvalue()


class Trainer:
    """One surface's learner, its cursor in the stream, and its published version."""

    def __init__(
        self,
        redis: aioredis.Redis,
        surface: str,
        new_agent: Callable[[], DQN | QLearning],
        *,
        checkpoint_every: int = 500,
        encode: Callable[[tuple[float, ...]], int] | None = None,
    ) -> None:
        self.redis = redis
        self.surface = surface
        self.log = TransitionLog(redis, surface)
        self.new_agent = new_agent
        self.checkpoint_every = checkpoint_every
        self.encode = encode
        self.agent: DQN | QLearning = new_agent()
        self.cursor = "0-0"
        self.version = 0
        self.seen: deque[str] = deque(maxlen=SEEN_IDS)
        self._seen_set: set[str] = set()
        self.since_checkpoint = 0
        self.learned = 0
        self.checkpointed_at = time.monotonic()
        # One checkpoint at a time: a checkpoint asked for (``checkpoint_now``) while the loop's own
        # is awaiting Redis would otherwise take the same version number.
        self._checkpointing = asyncio.Lock()

    async def start(self) -> None:
        """Resume from the checkpoint if there is one."""
        data = await self.redis.get(checkpoint_key(self.surface))
        if not isinstance(data, bytes):
            return
        self.agent, extra = loads(data)
        self.cursor = str(extra["cursor"])
        self.version = int(extra["version"])
        self.seen = deque(extra["seen"], maxlen=SEEN_IDS)
        self._seen_set = set(self.seen)
        self.since_checkpoint = 0

    def _remember(self, decision_id: str) -> None:
        if len(self.seen) == self.seen.maxlen:
            self._seen_set.discard(self.seen[0])
        self.seen.append(decision_id)
        self._seen_set.add(decision_id)

    def learn(self, record: TransitionRecord) -> bool:
        """Learn from one transition unless its decision was learned from already."""
        if record.decision_id in self._seen_set:
            return False
        self._remember(record.decision_id)
        if isinstance(self.agent, QLearning):
            if self.encode is None:
                raise ValueError("a tabular trainer needs encode: state vector -> state index")
            s, s2 = self.encode(record.state), self.encode(record.next_state)
            self.agent.update(s, record.action, record.reward, s2, record.done)
        else:
            state = np.asarray(record.state, dtype=np.float32)
            nxt = np.asarray(record.next_state, dtype=np.float32)
            self.agent.observe(state, record.action, record.reward, nxt, record.done)
        return True

    async def step(self, max_transitions: int = 256) -> Progress:
        """Learn from what the stream holds after the cursor (up to ``max_transitions``), checkpointing
        on schedule."""
        progress = Progress()
        for stream_id, record in await self.log.read_after(self.cursor, max_transitions):
            if self.learn(record):
                progress.learned += 1
                self.learned += 1
            else:
                progress.skipped += 1
            self.cursor = stream_id
            self.since_checkpoint += 1
            if self.since_checkpoint >= self.checkpoint_every:
                await self.checkpoint()
        return progress

    async def checkpoint(self) -> int:
        """Save and publish the next version atomically, then trim the stream behind the cursor."""
        async with self._checkpointing:
            return await self._checkpoint()

    async def _checkpoint(self) -> int:
        version = self.version + 1
        extra = {"cursor": self.cursor, "version": version, "seen": list(self.seen)}
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(checkpoint_key(self.surface), dumps(self.agent, extra=extra))
        pipe.hset(
            weights_key(self.surface),
            mapping={
                "version": version,
                "weights": policy_bytes(self.agent),
                "transitions": self.agent.transitions,
                "published_ms": int(time.time() * 1000),
            },
        )
        await pipe.execute()
        self.version = version
        self.since_checkpoint = 0
        self.checkpointed_at = time.monotonic()
        await self.log.trim_through(self.cursor)
        return version

    async def run(self, idle_seconds: float = 0.05, checkpoint_seconds: float = 10.0) -> None:
        """Learn as transitions arrive; when the stream is idle, checkpoint what was learned since the
        last checkpoint once it is ``checkpoint_seconds`` old (so a quiet surface still publishes)."""
        while True:
            progress = await self.step()
            if progress.learned + progress.skipped:
                continue
            if self.since_checkpoint and time.monotonic() - self.checkpointed_at >= checkpoint_seconds:
                await self.checkpoint()
            await asyncio.sleep(idle_seconds)

    def status(self) -> dict[str, int | str]:
        return {
            "version": self.version,
            "cursor": self.cursor,
            "learned": self.learned,
            "since_checkpoint": self.since_checkpoint,
            "transitions": self.agent.transitions,
        }


def new_agent_from(algorithm: str, config: dict[str, Any]) -> Callable[[], DQN | QLearning]:
    """A factory of fresh learners of a config dict (``checkpoint.config_to_dict``'s form)."""
    parsed = config_from_dict(algorithm, config)

    def new_agent() -> DQN | QLearning:
        return DQN(parsed) if isinstance(parsed, DQNConfig) else QLearning(parsed)

    return new_agent
