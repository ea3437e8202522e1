"""Redis access for the shard actors: the durable side of every user's state.

Writes that acknowledge feedback go through one Lua script per event (idempotency check +
log append, atomically), pipelined so a whole batch costs one round trip. What is kept how
long is ``retention.py``'s: snapshots compact the logs behind them.
Keys follow `keys.UserKeys`; every script touches the keys of one user only, so the
same calls work on a Redis Cluster.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from string import Template
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import DataError, NoScriptError, OutOfMemoryError, RedisError, ResponseError
from redis.maint_notifications import MaintNotificationsConfig

from rewardloop.state.direct import DirectPipelines
from rewardloop.state.keys import PLAUSIBLE_MS, UserKeys, decision_day, split_window_member, window_member
from rewardloop.state.records import DecisionRecord, FeedbackRecord, stream_id_key
from rewardloop.state.retention import (
    DAY_MS,
    DEDUP_DAYS,
    DEFAULT_RETENTION,
    PRUNE_FLOOR,
    Retention,
    dedup_days,
)

log = logging.getLogger(__name__)

# Decisions kept per user in the capped decision log (and no older than the log retention).
DECISION_LOG_LENGTH = 1000
REPLAY_PAGE = 1000
# Drop the fields of hash ``key`` dated before ``cutoff`` (ms; ``date(field, value)`` is a field's
# time, nil for none) once the hash has doubled since its last prune (retention.py): the field ""
# keeps the size to prune at.
_PRUNE = Template("""
local function prune(key, cutoff, date)
  local n = redis.call('HLEN', key)
  if n < math.max(tonumber(redis.call('HGET', key, '')) or 0, $floor) then return end
  local all = redis.call('HGETALL', key)
  local drop = {}
  for i = 1, #all, 2 do
    if all[i] ~= '' then
      local t = date(all[i], all[i + 1])
      if t and t < cutoff then drop[#drop + 1] = all[i] end
    end
  end
  for i = 1, #drop, 1000 do
    redis.call('HDEL', key, unpack(drop, i, math.min(i + 999, #drop)))
  end
  redis.call('HSET', key, '', 2 * (n - #drop))
end
""").substitute(floor=PRUNE_FLOOR)
# The time a decision id names (keys.new_decision_id); nil for ids made otherwise.
_DECIDED_AT = Template("""
local function decided_at(id)
  local t = tonumber(string.sub(id, 1, 12), 16)
  if string.len(id) >= 32 and t and t >= $low and t < $high then return t end
end
""").substitute(low=PLAUSIBLE_MS[0], high=PLAUSIBLE_MS[1])
# Append one event unless its id was seen (retention.py: the user's id hash, then the per-day hashes
# and the marker of an event received before it). The id hash keeps "<entry id>" or, for a flagged
# event, "<entry id> <flag>", so a retry learns whether the original trains even after compaction;
# a seen id answers {entry id, flag} (a legacy marker's flag is read from its entry, if still there).
# Ids are pruned by the receipt time of their entry.
# KEYS: id hash | per-day id hashes | legacy marker | feedback log
# ARGV: now (ms) | dedup window (ms) | event id | flag | entry fields
# The log gets no lifetime here: entries no snapshot covers are kept until one does (_WRITE_SNAPSHOT).
_RECORD_EVENT = (
    _PRUNE
    + """
local log = KEYS[#KEYS]
for i = 1, #KEYS - 2 do
  local seen = redis.call('HGET', KEYS[i], ARGV[3])
  if seen then
    local space = string.find(seen, ' ', 1, true)
    if space then return {string.sub(seen, 1, space - 1), string.sub(seen, space + 1)} end
    return {seen, ''}
  end
end
local legacy = redis.call('GET', KEYS[#KEYS - 1])
if legacy then
  local flag = ''
  local entry = redis.call('XRANGE', log, legacy, legacy)[1]
  if entry then
    for i = 1, #entry[2], 2 do
      if entry[2][i] == 'q' then flag = entry[2][i + 1] end
    end
  end
  return {legacy, flag}
end
local id = redis.call('XADD', log, '*', unpack(ARGV, 5))
redis.call('PERSIST', log)
if ARGV[4] == '' then
  redis.call('HSET', KEYS[1], ARGV[3], id)
else
  redis.call('HSET', KEYS[1], ARGV[3], id .. ' ' .. ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
prune(KEYS[1], tonumber(ARGV[1]) - tonumber(ARGV[2]), function(_, v) return tonumber(string.match(v, '^%d+')) end)
return id
"""
)
# Add a decision to its user's join index, pruned by the decision times the ids name.
# KEYS: join index | ARGV: now (ms) | join horizon (ms) | decision id | record
_INDEX_DECISION = (
    _PRUNE
    + _DECIDED_AT
    + """
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
prune(KEYS[1], tonumber(ARGV[1]) - tonumber(ARGV[2]), decided_at)
return 1
"""
)
# Write a snapshot with the learned ledger entries it leaves out (settled.py), and compact the
# logs behind it, atomically: feedback entries go only once the snapshot that covers them is stored
# (a failed SET stops the script before anything else; Redis refuses a script for lack of memory
# only at its first write). Once the snapshot covers the whole feedback log, the log may expire
# with retention. Stored entries are pruned by their decision's time (their field starts with its id).
# The first m field-value pairs are appended to what their field holds (comma-separated), the rest set.
# KEYS: snapshot | feedback log | decision log | stored ledger entries
# ARGV: snapshot | its lifetime (ms) | feedback-log trim id | decision-log trim id
#       | the snapshot's log position | log retention (ms) | now (ms) | ledger horizon (ms)
#       | m | field, value, ...
_WRITE_SNAPSHOT = (
    _PRUNE
    + _DECIDED_AT
    + """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if #ARGV > 9 then
  for i = 10, 9 + 2 * tonumber(ARGV[9]), 2 do
    local old = redis.call('HGET', KEYS[4], ARGV[i])
    if old then ARGV[i + 1] = old .. ',' .. ARGV[i + 1] end
  end
  redis.call('HSET', KEYS[4], unpack(ARGV, 10))
  redis.call('PEXPIRE', KEYS[4], ARGV[8])
  prune(KEYS[4], tonumber(ARGV[7]) - tonumber(ARGV[8]), decided_at)
end
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[3])
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[4])
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
if last == nil or last[1] == ARGV[5] then
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
return 1
"""
)
_SCRIPTS = (_RECORD_EVENT, _INDEX_DECISION, _WRITE_SNAPSHOT)


_RECORD_SHA, _INDEX_SHA, _SNAPSHOT_SHA = (hashlib.sha1(script.encode()).hexdigest() for script in _SCRIPTS)


@dataclass(frozen=True)
class Seen:
    """An event id the log already holds (a retry): the original entry's quality flag."""

    stream_id: str
    flag: str


# Connections per shard. A blocking pool makes a burst (e.g. a batch of many unseen users)
# wait for a connection instead of failing with "Too many connections".
MAX_CONNECTIONS = 64
POOL_WAIT_SECONDS = 10


class HiredisPacking:
    """Commands packed by hiredis' C packer: redis-py's asyncio connections pack in Python (its sync
    ones use hiredis when installed; the packer was 11% of a shard's profiled time). The same
    bytes as redis-py's (tests/unit/test_store_packing.py); mixed into the connection class the
    URL chose. ``bench/shard.py`` measures it against redis-py's packer."""

    def pack_command(self, *args: Any) -> list[bytes]:
        head = args[0]
        if isinstance(head, str):  # "CONFIG GET": the words go separately, as redis-py sends them
            args = (*head.encode().split(), *args[1:])
        elif b" " in head:
            args = (*head.split(), *args[1:])
        try:
            packed = tuple(bytes(a) if isinstance(a, memoryview | bytearray) else a for a in args)
            return [hiredis.pack_command(packed)]  # type: ignore[arg-type]  # its stub says a 1-tuple
        except TypeError as exc:  # a bool or None: what redis-py's Python packer refuses too
            raise DataError(str(exc)) from exc


_HIREDIS_PACKED: dict[type[Any], type[Any]] = {}


def hiredis_packed(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` (plain TCP, TLS or a Unix socket, as the URL says) packing with hiredis."""
    if connection_class not in _HIREDIS_PACKED:
        name = f"Hiredis{connection_class.__name__}"
        _HIREDIS_PACKED[connection_class] = type(name, (HiredisPacking, connection_class), {})
    return _HIREDIS_PACKED[connection_class]


def waiting_client(url: str) -> aioredis.Redis:
    """A client for many concurrent callers: past ``MAX_CONNECTIONS`` connections in use, a caller
    waits up to ``POOL_WAIT_SECONDS`` for one instead of failing (redis-py 8's default pool raises
    ``MaxConnectionsError`` past 100: a burst of Assign calls failed as UNAVAILABLE). Commands are
    packed by hiredis (``hiredis_packed``)."""
    # No CLIENT SETINFO nor CLIENT MAINT_NOTIFICATIONS on each new connection: Redis 6.2 (the
    # embedded one) knows neither, and each refusal left a traceback cycle holding the task that
    # connected and what it was loading, garbage only the cycle collector finds (workers/heap.py).
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_SECONDS, health_check_interval=30,
        driver_info=None, maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )  # fmt: skip
    pool.connection_class = hiredis_packed(pool.connection_class)
    return aioredis.Redis(connection_pool=pool, decode_responses=False)


class Store:
    """A shard's Redis: ``retention`` bounds what it keeps (``retention.py``); ``join_ms`` is how long
    after a decision feedback can still join it (the longest reward window + the 7 days feedback
    may be late), ``settled_ms`` how long after it its ledger entries can still change
    (``ServiceConfig.settled_ms``); ``clock`` (Unix seconds) is what the per-user hashes are pruned by."""

    def __init__(
        self,
        url: str,
        retention: Retention = DEFAULT_RETENTION,
        join_ms: int = DEDUP_DAYS * DAY_MS,
        clock: Callable[[], float] = time.time,
        settled_ms: int = 2 * DEDUP_DAYS * DAY_MS,
    ):
        self.redis = waiting_client(url)
        # The two writes every call makes (record_feedback, write_back): direct.py.
        self.direct = DirectPipelines(self.redis)
        self.retention = retention
        self._join_ms = join_ms
        self._settled_ms = settled_ms
        self._dedup_ms = retention.dedup_seconds * 1000
        self._clock = clock

    async def close(self) -> None:
        await self.direct.close()
        await self.redis.aclose()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def _load_scripts(self) -> None:
        """After a Redis restart (scripts are not persisted)."""
        for script in _SCRIPTS:
            await self.redis.script_load(script)

    async def record_feedback(self, records: Sequence[FeedbackRecord]) -> list[str | Seen]:
        """Make events durable; the stream id of each, or ``Seen`` for an event id already logged."""
        try:
            return await self._record_feedback(records)
        except NoScriptError as refused:
            # Redis restarted without the script: every EVALSHA of the pipeline was refused,
            # none ran, so loading it and sending the batch again is safe.
            # redis-py's frames hold the error in their locals: a cycle through its traceback, with
            # our records in it, that only the cycle collector frees (and shards freeze their heap).
            refused.__traceback__ = None
            await self._load_scripts()
            return await self._record_feedback(records)

    async def _record_feedback(self, records: Sequence[FeedbackRecord]) -> list[str | Seen]:
        now_ms = self._now_ms()
        days = dedup_days(now_ms)
        # EVALSHA directly: redis-py's Script objects add a SCRIPT EXISTS round trip per pipeline.
        pipe = self.direct.pipeline()
        for r in records:
            keys = UserKeys(r.pseudonym)
            hashes = [keys.event_ids, *(keys.day_event_ids(day) for day in days)]
            pipe.evalsha(
                _RECORD_SHA, len(hashes) + 2, *hashes, keys.legacy_event(r.event_id), keys.feedback_log,
                now_ms, self._dedup_ms, r.event_id, r.flag, *r.fields(),
            )  # fmt: skip
        results = _raise_first_error(await self.direct.execute(pipe))
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
        """Decision records for (pseudonym, decision_id) pairs; None where unknown (or past the join
        horizon). The user's join index holds a decision; one indexed by an earlier version may be
        in its day's index, or, made before those, in the user's legacy index."""
        places = []
        for pseudonym, decision_id in lookups:
            keys, day = UserKeys(pseudonym), decision_day(decision_id)
            indexes = [keys.decision_index, keys.legacy_decision_index]
            places.append(indexes if day is None else [*indexes, keys.day_decision_index(day)])
        async with self.redis.pipeline(transaction=False) as pipe:
            for (_, decision_id), indexes in zip(lookups, places, strict=True):
                for index in indexes:
                    pipe.hget(index, decision_id)
            raw = iter(await pipe.execute())
        found: list[DecisionRecord | None] = []
        for (pseudonym, decision_id), indexes in zip(lookups, places, strict=True):
            record = next((r for r in [next(raw) for _ in indexes] if r is not None), None)
            found.append(None if record is None else DecisionRecord.from_json(pseudonym, record, decision_id))
        return found

    async def write_back(
        self, decisions: Sequence[DecisionRecord], snapshots: Mapping[str, Snapshot], windows_key: str = ""
    ) -> None:
        """Background writes in one round trip: decision log + join index (+ the open window in
        ``windows_key``), and snapshots, each compacting the user's logs behind it."""
        log_ttl_ms = self.retention.logs_seconds * 1000
        now_ms = self._now_ms()
        pipe = self.direct.pipeline()
        for d in decisions:
            keys = UserKeys(d.pseudonym)
            pipe.xadd(keys.decision_log, {"j": d.to_json()}, maxlen=DECISION_LOG_LENGTH, approximate=True)
            pipe.pexpire(keys.decision_log, log_ttl_ms)
        open_windows = {window_member(d.pseudonym, d.decision_id): d.closes_at_ms for d in decisions}
        if windows_key and open_windows:
            pipe.zadd(windows_key, open_windows)
        self._queue_scripts(pipe, decisions, snapshots, now_ms)
        results = await self.direct.execute(pipe)
        errors = [r for r in results if isinstance(r, Exception)]
        if errors and all(isinstance(e, NoScriptError) for e in errors):
            # Only the scripts were refused (Redis restarted): the rest is written.
            await self._load_scripts()
            pipe = self.direct.pipeline()
            self._queue_scripts(pipe, decisions, snapshots, now_ms)
            _raise_first_error(await self.direct.execute(pipe))
        elif errors:
            raise errors[0]

    def _queue_scripts(
        self, pipe: Any, decisions: Sequence[DecisionRecord], snapshots: Mapping[str, Snapshot], now_ms: int
    ) -> None:
        """The join index entry of each decision; each snapshot with the learned ledger entries it
        stores and the compaction of its user's logs (feedback entries past retention and covered by
        the snapshot, decisions past retention)."""
        for d in decisions:
            pipe.evalsha(_INDEX_SHA, 1, UserKeys(d.pseudonym).decision_index, now_ms, self._join_ms, d.decision_id,
                         d.to_json(keyed=True))  # fmt: skip
        cutoff = self.retention.log_cutoff_id(now_ms)
        lifetime_ms = self.retention.user_state_seconds * 1000
        log_ttl_ms = self.retention.logs_seconds * 1000
        for pseudonym, snapshot in snapshots.items():
            keys = UserKeys(pseudonym)
            covered = min(cutoff, snapshot.last_id, key=stream_id_key)
            appended = [part for pair in sorted(snapshot.defaults.items()) for part in pair]
            entries = [part for pair in sorted(snapshot.settled.items()) for part in pair]
            pipe.evalsha(
                _SNAPSHOT_SHA, 4, keys.snapshot, keys.feedback_log, keys.decision_log, keys.settled,
                snapshot.blob, lifetime_ms, covered, cutoff, snapshot.last_id, log_ttl_ms, now_ms, self._settled_ms,
                len(snapshot.defaults), *appended, *entries,
            )  # fmt: skip


def _raise_first_error(replies: list[Any]) -> list[Any]:
    """``replies`` unless one is an error reply: then that error (as redis-py's pipeline raises it)."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


@dataclass(frozen=True)
class Snapshot:
    """A user's snapshot bytes, the feedback-log position they cover, and the learned ledger entries
    it leaves out, stored with it (``settled.py``: field -> value, set; and appended to)."""

    blob: bytes
    last_id: str
    settled: Mapping[str, bytes] = field(default_factory=dict)
    defaults: Mapping[str, bytes] = field(default_factory=dict)


def out_of_memory(exc: BaseException) -> bool:
    """Whether Redis refused a write because it is at ``maxmemory`` (Redis 6 reports it from inside
    a script as a plain error naming OOM)."""
    return isinstance(exc, OutOfMemoryError) or (isinstance(exc, RedisError) and "OOM command not allowed" in str(exc))


async def check_no_eviction(url: str) -> None:
    """Refuse a Redis that may evict keys when full: it would silently drop acknowledged feedback
    and users' snapshots. (A Redis that does not allow CONFIG is trusted, with a warning.)"""
    client = aioredis.Redis.from_url(url)
    try:
        settings: Any = await client.config_get("maxmemory-policy")
    except ResponseError as exc:
        log.warning("cannot read Redis maxmemory-policy (%s); it must be noeviction", exc)
        return
    finally:
        await client.aclose()
    raw = next(iter(settings.values()), b"noeviction")
    policy = raw.decode() if isinstance(raw, bytes) else str(raw)
    if policy != "noeviction":
        raise RuntimeError(
            f"Redis maxmemory-policy is {policy!r}: when full it would evict acknowledged feedback and "
            "users' state; set maxmemory-policy noeviction (writes then fail and callers retry)"
        )
