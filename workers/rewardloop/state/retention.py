"""How long a user's data stays in Redis: every key family has a lifetime and a bound.

==========================  ===============================================  =========================================
key (``keys.py``)           lifetime                                         bound
==========================  ===============================================  =========================================
``rl:{p}:fb`` feedback log  compacted at each snapshot: entries older than   the events of ``logs_seconds``, plus those
                            ``logs_seconds`` *and* covered by the snapshot   since the user's last snapshot (at most
                            go; once a snapshot covers all of it, the key    ``snapshot_every``, or an idle minute's)
                            expires ``logs_seconds`` later (an append
                            takes the lifetime away again)
``rl:{p}:dec`` decisions    the same, and at most 1,000 entries              ``min(1000, decisions of logs_seconds)``
``rl:{p}:join`` join index  one hash per user, decision id -> record;       the decisions of ``join_ms``, at most
                            entries go once no feedback can join them        twice over (see below)
                            (``join_ms``: the longest reward window +
                            ``quality.max_age_ms``); the key expires
                            ``join_ms`` after its last write
``rl:{p}:ids`` event ids    one hash per user, event id -> its log entry;    the events of ``dedup_seconds``, at most
(idempotency)               entries go ``dedup_seconds`` after receipt, so   twice over
                            a retry within that is always found; the key
                            expires ``dedup_seconds`` after its last write
``rl:{p}:led`` stored       one hash per user: the learned reward-ledger     a field per item with feedback and one
ledger entries              entries a snapshot stored beside it              per decision for the rest of its slate,
                            (``settled.py``); entries go once feedback can   of ``settled_ms``, at most twice over
                            no longer change them (``settled_ms``: the
                            longest window + ``quality.max_age_ms``)
``rl:{p}:snap`` snapshot    expires ``user_state_seconds`` after its last    one per user
                            write (a user idle that long is forgotten)
``rl:windows:<shard>``      a member per open reward window, removed when    decisions of the longest window
                            it closes
``rl:{p}:ses`` agent        one hash per user, a field per agent surface:    one session per user and agent surface
sessions                    the open session and its pending step; removed
                            when the session ends, the key expires
                            ``user_state_seconds`` after its last write
``rl:sessions:<shard>``     a member per open agent session by expiry,       the open sessions
                            removed when it ends (``workers/agents.py``)
``rl:pop:...`` priors       one hash per surface configuration and shard     segments x shards
``rl:transitions:<s>``      an agent surface's stream; trimmed behind each   ``transitions.MAX_ENTRIES`` (approximate)
agent transitions           trainer checkpoint (no pseudonym in it)
``rl:trainer:<s>``,         one checkpoint / one published version per       the replay ring's ``buffer_size``
``rl:policy:<s>``           agent surface, replaced at each checkpoint
==========================  ===============================================  =========================================

The three per-user hashes are pruned by the time each entry names (decision id, log entry id)
inside the script that writes them, once the hash has doubled since its last prune (a field ``""``
keeps the size to prune at): amortised O(1) per write, at most twice the live entries (and 32).
One hash per user instead of one per day saves ~100 B of key overhead per user and day, and any
horizon, down to a minute, is kept exactly. Keys of the per-day form (``dix:<day>``,
``ids:<day>``, ``led:<day>``, ``ev:<id>``) written by earlier versions are still read until they
expire (8 days at most).

Retention is also privacy: raw events are kept ``logs_seconds``, a user's learned state as long
as they keep coming back (and erasure removes all of it at once). What compaction costs: a
surface whose configuration changed is rebuilt from the retained log only, and off-policy
evaluation reads at most ``logs_seconds`` of decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

from rewardloop.learning.params import ConfigError, integer_in

DAY_MS = 86_400_000
DAY_SECONDS = 86_400
# Feedback event ids were deduplicated for 7 days in per-day hashes, still read until they expire.
DEDUP_DAYS = 7
# A per-user hash is pruned once it holds twice what it held after its last prune, and not below this.
PRUNE_FLOOR = 32


@dataclass(frozen=True)
class Retention:
    """``[service.retention]``: how long logs and learned states are kept (module docstring)."""

    logs_seconds: int = 14 * DAY_SECONDS
    """Feedback and decision logs: what replay, evaluation, experiments and analytics can read."""
    user_state_seconds: int = 365 * DAY_SECONDS
    """A user's snapshot, from its last write: a user idle longer starts over."""
    dedup_seconds: int = 7 * DAY_SECONDS
    """Feedback event ids, from their receipt: a retry within this is recognised (feedback.proto)."""

    def __post_init__(self) -> None:
        integer_in("service.retention.logs_seconds", self.logs_seconds, 1, 10 * 365 * DAY_SECONDS)
        integer_in("service.retention.user_state_seconds", self.user_state_seconds, 1, 10 * 365 * DAY_SECONDS)
        integer_in("service.retention.dedup_seconds", self.dedup_seconds, 60, 365 * DAY_SECONDS)
        if self.user_state_seconds < self.logs_seconds:
            # A snapshot must outlive the log it covers, or a returning user is rebuilt from a
            # compacted log alone.
            raise ConfigError(
                "service.retention.user_state_seconds must be >= logs_seconds "
                f"({self.logs_seconds}), got {self.user_state_seconds}"
            )

    def log_cutoff_id(self, now_ms: int) -> str:
        """The stream id below which log entries are past retention."""
        return f"{max(now_ms - self.logs_seconds * 1000, 0)}-0"


DEFAULT_RETENTION = Retention()


def day_of(at_ms: int) -> int:
    """The UTC day number of a Unix-ms time: the bucket of the per-day keys."""
    return at_ms // DAY_MS


def day_ends_at(day: int) -> int:
    """Unix seconds at which ``day`` ends."""
    return (day + 1) * DAY_SECONDS


def dedup_days(now_ms: int) -> list[int]:
    """The days whose per-day event-id hashes (of earlier versions) a new event is also checked
    against, newest first: every day an event first received within the last 7 days can be in."""
    today = day_of(now_ms)
    return [today - k for k in range(DEDUP_DAYS + 1)]
