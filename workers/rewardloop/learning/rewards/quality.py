"""Feedback quality: which events are rejected, which are flagged, which may train.

**The rule**, checked in this order; the first that applies decides (the reason starts with the field):

1. REJECT ``value:`` -- not finite, out of the signal's range, or not whole for an integral signal
   (``signals.check_value``);
2. REJECT ``occurred_at:`` -- occurred more than ``max_future_ms`` (5 min) after it was received;
3. FLAG ``decision_id:`` -- names a decision this user never received;
4. FLAG ``occurred_at:`` -- occurred more than ``max_age_ms`` (7 days) before it was received;
5. FLAG ``burst:`` -- part of a burst no human makes (:class:`BurstDetector`);
6. ACCEPT otherwise.

REJECT: the caller's mistake; the event is not recorded and the caller gets INVALID_ARGUMENT with
the reason. FLAG: the event is recorded with its reason (kept for analysis and for the caller's
statistics) but never trains a policy. ACCEPT: recorded and trains.

Both time rules compare the event's own two clocks (caller's ``occurred_at_ms``, server's
``received_at_ms``), not the wall clock at assessment, so re-assessing a logged event during a
replay gives the same verdict. The 7-day age limit is the idempotency horizon of feedback.proto:
an older event's retries could no longer be recognised as duplicates.

**Bursts.** Per user, an *action* (any signal but impressions, which arrive a slate at a time) is
a burst when, counting it, some window of one second (``(s - 1 s, s]``) containing it holds more
than ``burst_per_second`` (20) of the user's actions observed so far, or some window of a minute
more than ``burst_per_minute`` (600). When a user's events arrive in time order (the normal case)
that is simply the window ending at the event. A fast human scrolling a feed reports at most
about 3 signals per item (skip, dwell, completion) at about 2 items a second: ~6 actions/s, and
not for a whole minute. Observe each distinct event once (after deduplication by ``event_id``):
a retry is not an action. The detector keeps a user's newest ``burst_per_minute + 1`` action
times of the last minute (enough to tell "more than the limit" for in-order arrival); verdicts
are deterministic given the arrival sequence, so a replay of the log reproduces them.

>>> verdict = assess(Event("e1", Signal.DWELL, -1.0, occurred_at_ms=1_000, received_at_ms=1_000), EventContext())
>>> verdict.outcome, verdict.reason
(<Outcome.REJECT: 'reject'>, 'value: dwell value must be seconds in [0, 86400], got -1.0')
>>> verdict = assess(Event("e2", Signal.CLICK, 1.0, 1_000, 1_000), EventContext(decision_known=False))
>>> verdict.outcome, verdict.records, verdict.trains
(<Outcome.FLAG: 'flag'>, True, False)
>>> detector = BurstDetector(QualityConfig(burst_per_second=2, burst_per_minute=100))
>>> [detector.observe("user-1", t) for t in (0, 10, 20, 1_010)]
[False, False, True, False]
"""

from __future__ import annotations

import bisect
import enum
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rewardloop.learning.params import int_in_range
from rewardloop.learning.rewards.signals import Event, Signal, check_value

SECOND_MS = 1_000
MINUTE_MS = 60_000
DAY_MS = 86_400_000


class Outcome(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    FLAG = "flag"


@dataclass(frozen=True)
class Verdict:
    """What happens to one event; ``reason`` names the field (empty when accepted)."""

    outcome: Outcome
    reason: str = ""

    @property
    def records(self) -> bool:
        """Whether the event is kept (accepted or flagged)."""
        return self.outcome is not Outcome.REJECT

    @property
    def trains(self) -> bool:
        """Whether the event may change a reward and train a policy."""
        return self.outcome is Outcome.ACCEPT


ACCEPT = Verdict(Outcome.ACCEPT)


@dataclass(frozen=True)
class QualityConfig:
    """Limits of the quality rules (service-wide), validated on construction."""

    max_future_ms: int = 5 * MINUTE_MS
    """How far ``occurred_at`` may be ahead of receipt (client clock skew), per feedback.proto."""
    max_age_ms: int = 7 * DAY_MS
    """Older events are flagged: feedback.proto deduplicates event ids for 7 days."""
    burst_per_second: int = 20
    """A user's actions allowed in any (t - 1 s, t]; more are flagged."""
    burst_per_minute: int = 600
    """A user's actions allowed in any (t - 60 s, t]; more are flagged."""

    def __post_init__(self) -> None:
        int_in_range("max_future_ms", self.max_future_ms, 0, DAY_MS)
        int_in_range("max_age_ms", self.max_age_ms, MINUTE_MS, 365 * DAY_MS)
        int_in_range("burst_per_second", self.burst_per_second, 1, 1_000_000)
        int_in_range("burst_per_minute", self.burst_per_minute, self.burst_per_second, 1_000_000)


DEFAULT_QUALITY = QualityConfig()


@dataclass(frozen=True)
class EventContext:
    """What the service knows about an event beyond its own fields."""

    decision_known: bool = True
    """False when the event names a ``decision_id`` this user never received."""
    burst: bool = False
    """What :meth:`BurstDetector.observe` said about this event."""


def assess(event: Event, context: EventContext, config: QualityConfig = DEFAULT_QUALITY) -> Verdict:
    """The verdict on ``event`` (rule table in the module docstring)."""
    problem = check_value(event.signal, event.value)
    if problem is not None:
        return Verdict(Outcome.REJECT, f"value: {problem}")
    ahead = event.occurred_at_ms - event.received_at_ms
    if ahead > config.max_future_ms:
        return Verdict(
            Outcome.REJECT,
            f"occurred_at: must be at most {config.max_future_ms} ms after receipt, got {ahead} ms in the future",
        )
    if not context.decision_known:
        return Verdict(Outcome.FLAG, "decision_id: unknown decision for this user")
    if -ahead > config.max_age_ms:
        return Verdict(Outcome.FLAG, f"occurred_at: {-ahead} ms before receipt, more than {config.max_age_ms} ms")
    if context.burst:
        return Verdict(
            Outcome.FLAG,
            f"burst: more than {config.burst_per_second} actions in 1 s "
            f"or {config.burst_per_minute} in 60 s from this user",
        )
    return ACCEPT


def _over(times: Sequence[int], t: int, span_ms: int, limit: int) -> bool:
    """Whether some window (s - span_ms, s] containing ``t`` holds more than ``limit`` of the sorted ``times``."""
    # The fullest such window can be taken to end at an event time s in [t, t + span_ms).
    ends = times[bisect.bisect_left(times, t) : bisect.bisect_left(times, t + span_ms)]
    return any(bisect.bisect_right(times, s) - bisect.bisect_right(times, s - span_ms) > limit for s in ends)


def counts_toward_burst(signal: Signal) -> bool:
    """Impressions come a slate at a time and are not user actions; every other signal is."""
    return signal is not Signal.IMPRESSION


class BurstDetector:
    """Sliding-window action counter per user (see the module docstring); deterministic, no clock.

    State is plain data: :meth:`to_lists` / :meth:`from_lists` carry it through a snapshot.
    """

    __slots__ = ("_times", "config")

    def __init__(self, config: QualityConfig = DEFAULT_QUALITY) -> None:
        self.config = config
        # Per user key, action times (Unix ms) ascending: 8 bytes each.
        self._times: dict[str, array[int]] = {}

    def observe(self, user_key: str, occurred_at_ms: int) -> bool:
        """Count one action of ``user_key``; True when it is part of a burst."""
        times = self._times.setdefault(user_key, array("q"))
        bisect.insort(times, occurred_at_ms)
        newest = times[-1]
        # Keep the last minute only, and at most limit + 1 times: enough to tell "more than the limit".
        del times[: max(bisect.bisect_right(times, newest - MINUTE_MS), len(times) - self.config.burst_per_minute - 1)]
        return _over(times, occurred_at_ms, SECOND_MS, self.config.burst_per_second) or _over(
            times, occurred_at_ms, MINUTE_MS, self.config.burst_per_minute
        )

    def forget_before(self, occurred_at_ms: int) -> None:
        """Drop users whose newest action is older than ``occurred_at_ms`` (bounds memory)."""
        for user in [u for u, times in self._times.items() if not times or times[-1] < occurred_at_ms]:
            del self._times[user]

    def to_lists(self) -> dict[str, list[int]]:
        return {user: list(times) for user, times in sorted(self._times.items())}

    @classmethod
    def from_lists(cls, raw: Mapping[str, list[int]], config: QualityConfig = DEFAULT_QUALITY) -> BurstDetector:
        detector = cls(config)
        detector._times = {user: array("q", sorted(int(t) for t in times)) for user, times in raw.items()}
        return detector
