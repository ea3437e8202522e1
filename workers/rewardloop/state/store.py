"""Redis access for the shard actors: the durable side of every user's state.

Writes that acknowledge feedback go through one Lua script per event (idempotency
marker + log append, atomically), pipelined so a whole batch costs one round trip.
Keys follow `keys.UserKeys`; every script touches the keys of one user only, so the
same calls work on a Redis Cluster.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from rewardloop.state.keys import UserKeys, split_window_member, window_member
from rewardloop.state.records import DecisionRecord, FeedbackRecord

# Idempotency window for event ids: a retry within it is counted once.
DEDUP_TTL_SECONDS = 7 * 24 * 3600
# Decisions kept per user in the capped decision log, and the join index's lifetime.
DECISION_LOG_LENGTH = 1000
DECISION_INDEX_TTL_SECONDS = 30 * 24 * 3600
REPLAY_PAGE = 1000
# An event id seen before answers {its entry's id, that entry's quality flag}: a retry learns
# whether the original trains (the flag is '' when it does, or when the entry is gone).
_RECORD_EVENT = """
local seen = redis.call('GET', KEYS[1])
if seen then
  local flag = ''
  local entry = redis.call('XRANGE', KEYS[2], seen, seen)[1]
  if entry then
    for i = 1, #entry[2], 2 do
      if entry[2][i] == 'q' then flag = entry[2][i + 1] end
    end
  end
  return {seen, flag}
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
return id
"""


@dataclass(frozen=True)
class Seen:
    """An event id the log already holds (a retry): the original entry's quality flag."""

    stream_id: str
    flag: str


# Connections per shard. A blocking pool makes a burst (e.g. a batch of many unseen users)
# wait for a connection instead of failing with "Too many connections".
MAX_CONNECTIONS = 64
POOL_WAIT_SECONDS = 10


class Store:
    def __init__(self, url: str):
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_SECONDS, health_check_interval=30
        )
        self.redis = aioredis.Redis(connection_pool=pool, decode_responses=False)
        self._record_sha = hashlib.sha1(_RECORD_EVENT.encode()).hexdigest()

    async def close(self) -> None:
        await self.redis.aclose()

    async def record_feedback(self, records: Sequence[FeedbackRecord]) -> list[str | Seen]:
        """Make events durable; the stream id of each, or ``Seen`` for an event id already logged."""
        try:
            return await self._record_feedback(records)
        except NoScriptError:
            # Redis restarted without the script: every EVALSHA of the pipeline was refused,
            # none ran, so loading it and sending the batch again is safe.
            await self.redis.script_load(_RECORD_EVENT)
            return await self._record_feedback(records)

    async def _record_feedback(self, records: Sequence[FeedbackRecord]) -> list[str | Seen]:
        # EVALSHA directly: redis-py's Script objects add a SCRIPT EXISTS round trip per pipeline.
        async with self.redis.pipeline(transaction=False) as pipe:
            for r in records:
                keys = UserKeys(r.pseudonym)
                pipe.evalsha(
                    self._record_sha, 2, keys.event(r.event_id), keys.feedback_log, DEDUP_TTL_SECONDS, *r.fields()
                )
            results = await pipe.execute()
        return [Seen(res[0].decode(), res[1].decode()) if isinstance(res, list) else res.decode() for res in results]

    async def load_snapshot(self, pseudonym: str) -> bytes | None:
        blob: Any = await self.redis.get(UserKeys(pseudonym).snapshot)
        return None if blob is None else bytes(blob)

    async def logged_rewards(self, pseudonym: str, start: str) -> AsyncIterator[FeedbackRecord]:
        """Feedback-log entries from `start` (an XRANGE bound) to the end, paged."""
        async for raw_id, fields in self._stream(UserKeys(pseudonym).feedback_log, start):
            yield FeedbackRecord.from_fields(pseudonym, raw_id.decode(), fields)

    async def logged_decisions(self, pseudonym: str, start: str) -> AsyncIterator[DecisionRecord]:
        """Decision-log entries from `start` (an XRANGE bound) to the end, paged."""
        async for _, fields in self._stream(UserKeys(pseudonym).decision_log, start):
            yield DecisionRecord.from_json(pseudonym, fields[b"j"])

    async def _stream(self, key: str, start: str) -> AsyncIterator[tuple[bytes, dict[bytes, bytes]]]:
        """(id, fields) of a stream's entries from `start` to the end, REPLAY_PAGE at a time."""
        while True:
            page: Any = await self.redis.xrange(key, min=start, max="+", count=REPLAY_PAGE)
            for entry in page:
                yield entry
            if len(page) < REPLAY_PAGE:
                return
            start = "(" + page[-1][0].decode()

    async def due_windows(self, windows_key: str, now_ms: int, limit: int) -> list[tuple[str, str, int]]:
        """(pseudonym, decision_id, closes_at_ms) of up to ``limit`` windows in ``windows_key`` closed
        before ``now_ms``, earliest first."""
        members: Any = await self.redis.zrangebyscore(
            windows_key, "-inf", f"({now_ms}", start=0, num=limit, withscores=True
        )
        return [(*split_window_member(m.decode()), int(score)) for m, score in members]

    async def hand_over_windows(self, windows: Sequence[tuple[str, str, str, int]]) -> None:
        """Add (key, pseudonym, decision_id, closes_at_ms) windows to other shards' keys."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, pseudonym, decision_id, closes_at_ms in windows:
                pipe.zadd(key, {window_member(pseudonym, decision_id): closes_at_ms})
            await pipe.execute()

    async def forget_windows(self, windows_key: str, due: Sequence[tuple[str, str]]) -> None:
        if due:
            await self.redis.zrem(windows_key, *(window_member(p, d) for p, d in due))

    async def find_decisions(self, lookups: Sequence[tuple[str, str]]) -> list[DecisionRecord | None]:
        """Decision records for (pseudonym, decision_id) pairs; None where unknown."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for pseudonym, decision_id in lookups:
                pipe.hget(UserKeys(pseudonym).decision_index, decision_id)
            raw = await pipe.execute()
        return [None if r is None else DecisionRecord.from_json(p, r) for (p, _), r in zip(lookups, raw, strict=True)]

    async def write_back(
        self, decisions: Sequence[DecisionRecord], snapshots: dict[str, bytes], windows_key: str = ""
    ) -> None:
        """Background writes: decision log + join index (+ the open window in ``windows_key``), and
        snapshots, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for d in decisions:
                keys = UserKeys(d.pseudonym)
                record = d.to_json()
                pipe.xadd(keys.decision_log, {"j": record}, maxlen=DECISION_LOG_LENGTH, approximate=True)
                pipe.hset(keys.decision_index, d.decision_id, record)
                pipe.expire(keys.decision_index, DECISION_INDEX_TTL_SECONDS)
            open_windows = {window_member(d.pseudonym, d.decision_id): d.closes_at_ms for d in decisions}
            if windows_key and open_windows:
                pipe.zadd(windows_key, open_windows)
            for pseudonym, blob in snapshots.items():
                pipe.set(UserKeys(pseudonym).snapshot, blob)
            await pipe.execute()
