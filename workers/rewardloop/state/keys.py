"""Pseudonymised user ids, shard routing and the Redis key schema.

Raw user ids never reach Redis, logs or traces: everything is keyed by
``pseudonymize(user_id)``, an HMAC under the deployment's key. Every key that holds a
user's data carries that pseudonym as a Redis Cluster hash tag (``{...}``), so all of
them sit in one slot and can be found from the user id alone (export, erasure).

>>> p = pseudonymize("alice", b"k")
>>> len(p), p == pseudonymize("alice", b"k"), p == pseudonymize("bob", b"k")
(32, True, False)
>>> UserKeys(p).feedback_log == "rl:{" + p + "}:fb"
True
>>> 0 <= shard_for(p, 4) < 4
True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_PREFIX = "rl:"


def pseudonymize(user_id: str, key: bytes) -> str:
    """128-bit HMAC-SHA256 of the user id, hex: stable per deployment key, not reversible."""
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:32]


def shard_for(pseudonym: str, shards: int) -> int:
    """The shard that owns a user: stable for a given shard count."""
    return int(pseudonym[:8], 16) % shards


def user_seed(pseudonym: str) -> int:
    return int(pseudonym[:16], 16)


@dataclass(frozen=True)
class UserKeys:
    pseudonym: str

    @property
    def _prefix(self) -> str:
        return f"{KEY_PREFIX}{{{self.pseudonym}}}:"

    @property
    def feedback_log(self) -> str:
        """Stream: every accepted feedback event, in the order it was made durable."""
        return self._prefix + "fb"

    @property
    def decision_log(self) -> str:
        """Stream: the user's decisions (capped), for analysis, evaluation and export."""
        return self._prefix + "dec"

    @property
    def decision_index(self) -> str:
        """Hash decision_id -> decision record, for joining feedback to its decision: entries are
        dropped once no feedback can join them (``store.py``, pruned by the time in the id)."""
        return self._prefix + "join"

    def day_decision_index(self, day: int) -> str:
        """The join index of decisions made on ``day`` (UTC day number) before one hash per user;
        read, never written."""
        return self._prefix + f"dix:{day}"

    @property
    def legacy_decision_index(self) -> str:
        """The join index of decisions made before per-day indexes (expires 30 days after its last write)."""
        return self._prefix + "dix"

    @property
    def snapshot(self) -> str:
        """String: the user's policy states as of a feedback-log position."""
        return self._prefix + "snap"

    @property
    def event_ids(self) -> str:
        """Hash event_id -> feedback-log entry id: the idempotency of feedback, one small hash per
        user instead of a key per event (``store.py``, pruned by the receipt time in the entry id)."""
        return self._prefix + "ids"

    def day_event_ids(self, day: int) -> str:
        """The event ids first received on ``day`` (UTC day number) before one hash per user; read, never written."""
        return self._prefix + f"ids:{day}"

    @property
    def settled(self) -> str:
        """Hash of the user's learned reward-ledger entries, stored by snapshots (``state/settled.py``)."""
        return self._prefix + "led"

    def day_settled(self, day: int) -> str:
        """The stored ledger entries of decisions made on ``day`` before one hash per user; read, never written."""
        return self._prefix + f"led:{day}"

    @property
    def sessions(self) -> str:
        """Hash surface -> the user's open session on that agent surface (``workers/agents.py``)."""
        return self._prefix + "ses"

    @property
    def experiments(self) -> str:
        """Hash of the user's experiments: ``x:<experiment>`` -> ``<variant>|<first exposure ms>``
        (written once, by the front, at the first assignment) and ``m:<experiment>:<metric>`` -> the
        user's value of that metric (written by the owning shard), ``c:<experiment>`` -> the CUPED
        covariate, and ``attributed`` -> the log id of the last event attributed (``ATTRIBUTED_FIELD``).
        Expires when untouched (``state/experiment_metrics.py``)."""
        return self._prefix + "xp"

    def legacy_event(self, event_id: str) -> str:
        """Idempotency marker of one event received before per-day hashes (expires within 7 days)."""
        return self._prefix + "ev:" + event_id

    @property
    def pattern(self) -> str:
        """Glob matching every key of this user (for SCAN-based export and erasure)."""
        return self._prefix + "*"


def new_decision_id(decided_at_ms: int) -> str:
    """32 hex digits: the decision time (Unix ms, 12 digits) then 80 random bits, so the join index
    entry of a decision is found from its id alone (``decision_day``)."""
    return f"{decided_at_ms:012x}{secrets.token_hex(10)}"


# Decision ids whose time prefix is outside these years are older, random ids.
PLAUSIBLE_MS = (1_577_836_800_000, 4_102_444_800_000)  # 2020-01-01 .. 2100-01-01


def decision_day(decision_id: str) -> int | None:
    """The UTC day number a ``new_decision_id`` was made on; None for other ids.

    >>> decision_day(new_decision_id(1_700_000_000_000)), decision_day("caller-made"), decision_day("f" * 32)
    (19675, None, None)
    """
    if len(decision_id) != 32:
        return None
    try:
        at_ms = int(decision_id[:12], 16)
    except ValueError:
        return None
    return at_ms // 86_400_000 if PLAUSIBLE_MS[0] <= at_ms < PLAUSIBLE_MS[1] else None


# Glob of every user's decision log: what off-policy evaluation scans (``pseudonym_of`` names the user).
DECISION_LOGS = KEY_PREFIX + "{*}:dec"


def pseudonym_of(key: str) -> str:
    """The pseudonym a user's key is tagged with (``rl:{<pseudonym>}:...``).

    >>> pseudonym_of(UserKeys("abc").decision_log)
    'abc'
    """
    return key.partition("{")[2].partition("}")[0]


def windows_key(shard: int) -> str:
    """Sorted set of the shard's decisions whose reward window is open: member
    ``<pseudonym>:<decision_id>``, score the close time (Unix ms). Durable, so a crash forgets none."""
    return f"{KEY_PREFIX}windows:{shard}"


def window_member(pseudonym: str, decision_id: str) -> str:
    return f"{pseudonym}:{decision_id}"


def split_window_member(member: str) -> tuple[str, str]:
    """(pseudonym, decision_id) of a ``window_member``."""
    pseudonym, _, decision_id = member.partition(":")
    return pseudonym, decision_id


# Field of a contribution hash beside the segments' states (segments are feature values).
EPOCH_FIELD = "#epoch"


def contribution_key(surface_name: str, fingerprint: str, shard: int) -> str:
    """Hash segment -> this shard's policy state for the surface (not user data: aggregates).

    The surface's fingerprint is part of it: statistics gathered under another catalogue,
    algorithm, reward rule or half-life are not this configuration's prior.
    """
    return f"{KEY_PREFIX}pop:{surface_name}:{fingerprint}:{shard}"


def segment_sample_key(surface_name: str, fingerprint: str, shard: int) -> str:
    """Hash pseudonym -> that user's evidence, for the shard's sample of the surface's users that
    segments are fitted from (``state/segment_priors.py``; bounded, one writer: the shard)."""
    return f"{KEY_PREFIX}segsample:{surface_name}:{fingerprint}:{shard}"


def segment_model_key(surface_name: str, fingerprint: str) -> str:
    """Hash of the surface's segment model: field ``current`` (this version's bytes, with its number
    inside), ``previous`` (the version before, for how segments moved). One writer: the fitter."""
    return f"{KEY_PREFIX}segments:{surface_name}:{fingerprint}"


def linear_prior_key(surface_name: str, fingerprint: str) -> str:
    """Hash of a linear surface's learned prior strength: fields ``version``, ``strength``, ``users``,
    ``created_ms``. One writer: the fitter (``workers/segments.py``)."""
    return f"{KEY_PREFIX}linprior:{surface_name}:{fingerprint}"


def experiments_key() -> str:
    """Hash experiment name -> its record (JSON: spec, status, version, allocation). Not user data.
    Every change rewrites one field under WATCH (state/experiments.py)."""
    return f"{KEY_PREFIX}x:experiments"


def experiments_version_key() -> str:
    """Counter bumped by every experiment change: what the catalogues' caches poll."""
    return f"{KEY_PREFIX}x:version"


def experiment_history_key(name: str) -> str:
    """Stream of one experiment's changes (capped), newest last."""
    return f"{KEY_PREFIX}x:history:{name}"


def experiment_stats_key(name: str) -> str:
    """Hash of one experiment's per-variant sums: ``<variant>|n`` (users exposed), and per metric
    ``<variant>|<metric>|sy`` and ``|syy`` (Σy, Σy² over those users). Bounded by variants times metrics."""
    return f"{KEY_PREFIX}x:stats:{name}"


def experiment_monitor_key(name: str) -> str:
    """String: the experiment monitor's state of one experiment (JSON: its sequential tests between
    looks; `learning/experiments/monitor.py`). A few hundred bytes per metric and variant."""
    return f"{KEY_PREFIX}x:monitor:{name}"


def experiment_timeline_key(name: str) -> str:
    """Stream of one experiment's recorded looks (capped): the users and sums at each, from which
    the effect-over-time plot is drawn."""
    return f"{KEY_PREFIX}x:timeline:{name}"


def experiment_monitor_lease_key() -> str:
    """String: which front's experiment monitor acts (SET NX with an expiry; renewed each look)."""
    return f"{KEY_PREFIX}x:monitor-lease"


def surface_traffic_key(surface_name: str, day: str) -> str:
    """HyperLogLog of the distinct users a surface decided for on one UTC day (``YYYYMMDD``), for
    planning experiments (`state/traffic.py`). 12 KB at most, expires after `TRAFFIC_TTL_SECONDS`."""
    return f"{KEY_PREFIX}traffic:{surface_name}:{day}"


def traffic_since_key(day: str) -> str:
    """Sorted set with one member, ``start``: when counting traffic began that UTC day (epoch seconds;
    the earliest of the fronts that counted, `state/traffic.py`), so a day the service saw only part
    of is scaled from the hours it covered. Expires with the counts."""
    return f"{KEY_PREFIX}traffic-since:{day}"
