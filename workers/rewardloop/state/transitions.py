"""Agent transitions in Redis: the stream the shards append to and the trainer reads in order.

One stream per agent surface (``transitions_key``). An entry is one ``(state, action, reward,
next_state, done)`` with the decision it came from: no pseudonym (the trainer learns a policy, not
who taught it), state vectors as float32 bytes. The trainer reads by position: it keeps the id of the
last entry it learned from *inside* its checkpoint, so a restarted trainer reads from exactly there
(nothing lost, nothing learned twice; a consumer group's pending list would say what was delivered,
not what the checkpoint holds). Entries behind the checkpoint are trimmed (``trim_through``); the
stream is also capped (``MAX_ENTRIES``), so an absent trainer cannot grow it without bound.

A shard may append a transition twice (it crashed after the write, before it knew): the decision
id makes the second one recognisable, and the trainer skips ids it has learned from.

>>> record = TransitionRecord("d1", (0.0, 1.0), 2, 0.5, (1.0, 0.0), False, "v3", 1_700_000_000_000)
>>> TransitionRecord.from_fields(record.fields()) == record
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from rewardloop.state.keys import KEY_PREFIX

MAX_ENTRIES = 200_000
"""Cap on a surface's stream (approximate trimming; ~150 bytes an entry at 7 features): what an
absent trainer leaves to learn when it is back (at 100 agent decisions/s, half an hour)."""


def transitions_key(surface: str) -> str:
    """Stream of the surface's transitions; one reader: the surface's trainer."""
    return f"{KEY_PREFIX}transitions:{surface}"


def _vector(raw: bytes) -> tuple[float, ...]:
    return tuple(float(x) for x in np.frombuffer(raw, dtype="<f4"))


@dataclass(frozen=True)
class TransitionRecord:
    decision_id: str
    state: tuple[float, ...]
    action: int
    reward: float
    next_state: tuple[float, ...]
    done: bool
    model_version: str
    decided_at_ms: int

    def fields(self) -> dict[str, bytes | str | int | float]:
        return {
            "d": self.decision_id,
            "s": np.asarray(self.state, dtype="<f4").tobytes(),
            "a": self.action,
            "r": repr(float(self.reward)),
            "n": np.asarray(self.next_state, dtype="<f4").tobytes(),
            "e": int(self.done),
            "v": self.model_version,
            "t": self.decided_at_ms,
        }

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> TransitionRecord:
        f = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}

        def text(key: str) -> str:
            value = f[key]
            return value.decode() if isinstance(value, bytes) else str(value)

        def raw(key: str) -> bytes:
            value = f[key]
            return value if isinstance(value, bytes) else str(value).encode("latin-1")

        return cls(
            decision_id=text("d"),
            state=_vector(raw("s")),
            action=int(text("a")),
            reward=float(text("r")),
            next_state=_vector(raw("n")),
            done=text("e") == "1",
            model_version=text("v"),
            decided_at_ms=int(text("t")),
        )


def after(stream_id: str) -> str:
    """The XRANGE start just past ``stream_id`` (``0-0``: from the first entry)."""
    return "-" if stream_id == "0-0" else "(" + stream_id


class TransitionLog:
    """The surface's stream through one asyncio Redis client."""

    def __init__(self, redis: aioredis.Redis, surface: str) -> None:
        self.redis = redis
        self.key = transitions_key(surface)

    async def append(self, records: Sequence[TransitionRecord]) -> list[str]:
        """Append in order, one round trip; returns the entries' ids."""
        pipe = self.redis.pipeline(transaction=False)
        for record in records:
            pipe.xadd(self.key, record.fields(), maxlen=MAX_ENTRIES, approximate=True)  # type: ignore[arg-type]
        return [i.decode() if isinstance(i, bytes) else str(i) for i in await pipe.execute()]

    async def read_after(self, stream_id: str, count: int) -> list[tuple[str, TransitionRecord]]:
        """Up to ``count`` entries after ``stream_id``, oldest first."""
        entries: list[tuple[Any, Any]] = list(
            await self.redis.xrange(self.key, min=after(stream_id), max="+", count=count) or []
        )
        return [(i.decode() if isinstance(i, bytes) else str(i), TransitionRecord.from_fields(f)) for i, f in entries]

    async def trim_through(self, stream_id: str) -> int:
        """Drop the entries up to and including ``stream_id``; returns how many went."""
        if stream_id == "0-0":
            return 0
        ms, seq = (int(x) for x in stream_id.split("-"))
        return int(await self.redis.xtrim(self.key, minid=f"{ms}-{seq + 1}", approximate=False))

    async def length(self) -> int:
        return int(await self.redis.xlen(self.key))
