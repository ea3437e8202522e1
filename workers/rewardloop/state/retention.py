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
``rl:{p}:dix:<day>`` join   one hash per day of decision time; expires once  the decisions of ``join_ms``
index                       no feedback can join them any more (``join_ms``:
                            the longest reward window + the 7 days feedback
                            may be late)
``rl:{p}:ids:<day>`` event  one hash per day of first receipt, event id ->   the events of 8 days
ids (idempotency)           its log entry; expires 7 days after the day
                            ends, so a retry within 7 days is always found
``rl:{p}:led:<day>``        one hash per day of decision time: the learned   the clicked items of ``settled_ms``
stored ledger entries       reward-ledger entries a snapshot stored beside
                            it (``settled.py``); expires once feedback can
                            no longer change them (``settled_ms``: the
                            longest window + ``quality.max_age_ms``)
``rl:{p}:snap`` snapshot    expires ``user_state_seconds`` after its last    one per user
                            write (a user idle that long is forgotten)
``rl:windows:<shard>``      a member per open reward window, removed when    decisions of the longest window
                            it closes
``rl:pop:...`` priors       one hash per surface configuration and shard     segments x shards
==========================  ===============================================  =========================================

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
# Feedback event ids are deduplicated for 7 days (feedback.proto).
DEDUP_DAYS = 7


@dataclass(frozen=True)
class Retention:
    """``[service.retention]``: how long logs and learned states are kept (module docstring)."""

    logs_seconds: int = 14 * DAY_SECONDS
    """Feedback and decision logs: what replay, evaluation, experiments and analytics can read."""
    user_state_seconds: int = 365 * DAY_SECONDS
    """A user's snapshot, from its last write: a user idle longer starts over."""

    def __post_init__(self) -> None:
        integer_in("service.retention.logs_seconds", self.logs_seconds, 1, 10 * 365 * DAY_SECONDS)
        integer_in("service.retention.user_state_seconds", self.user_state_seconds, 1, 10 * 365 * DAY_SECONDS)
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
    """The days whose event-id buckets a new event is checked against, newest first: every day
    an event first received within the last 7 days can be in."""
    today = day_of(now_ms)
    return [today - k for k in range(DEDUP_DAYS + 1)]
