"""A user's reward ledger: each decision-item's fused reward so far, and what the policy learned of it.

One object, one entry point: :meth:`RewardLedger.ingest` applies one feedback-log entry (a caller's
event or the service's window close) to the ledger and to the surface's policy state. The live
ingest and the log replay both go through it, so the policy a replay rebuilds is the live one,
bit for bit.

**How feedback trains** (``RewardLedger.ingest``; the rule of ``rewards/fusion.py`` applied per decision-item):

- An event joined to its decision is folded into that decision-item's :class:`ItemReward`
  (its ``FusionState``, the decision's context, propensity and segment, and the arm). At the
  first event that gives the item a reward (a training event of a weighted signal), the policy
  learns that reward once (``Policy.update``) and the item remembers the update's position
  (``step``). Every later event that changes the fused reward is learned as a correction of
  that very observation (``Policy.revise``, ``age`` = updates since), so the policy ends up
  with the final fused reward whatever order the events came in, and a retry changes nothing.
- A decision-item that got no reward in its window learns the surface's ``default_reward``: once
  the window is over, the shard logs one *window-close* entry for the decision that lists its items
  not learned yet (``workers/windows.py``), and learning that entry (here) is each listed item's one
  observation, in list order; feedback that still arrives corrects it as above. Items that got
  only zero-weight signals (impressions) also learn it at the user's next logged event after the
  window. The log is the clock, so a replay closes them at the same point.
- An event without a decision trains alone, with its own reward; one whose decision is more
  than 7 days past its window (its ledger entry is gone) is flagged ``late`` instead.
- Flagged events (ingest: unknown decision, too old, burst; here: late under
  ``ignore_for_training``) are kept in the log and train nothing.

**Time decay** (surfaces with ``half_life_seconds``; the rule is ``rewards/decay.py``): every
observation is learned with weight ``2 ** ((t - epoch) / half_life)``, where ``t`` is its
decision's time (the event's own time without a decision) and ``epoch`` the surface's epoch in
this state, so corrections weigh what the observation weighs and arrival order does not matter.
An update more than 64 half-lives past the epoch first moves the epoch to its time and scales the
state down by the same factor. Deciding reads the state scaled by ``1 / weight(now)``. The epoch
is part of the snapshot, and a replay moves it at the same updates as the live run did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from rewardloop.learning.rewards.config import RewardConfig
from rewardloop.learning.rewards.entries import ItemReward, Settled, item_key
from rewardloop.learning.rewards.fusion import DecisionWindow, EventConflict, FusionState
from rewardloop.learning.rewards.quality import DEFAULT_QUALITY
from rewardloop.learning.rewards.signals import Event, Signal

if TYPE_CHECKING:  # attributes only: importing them here would be a cycle (surface -> rewards -> ledger)
    from rewardloop.learning.bandits import Policy, PolicyState
    from rewardloop.learning.surface import SurfaceConfig

# A decision's ledger entry is kept this long after its window closes, by default: the default
# ``quality.max_age_ms`` (feedback older than that is flagged at ingest, quality.py).
LEDGER_HORIZON_MS = DEFAULT_QUALITY.max_age_ms
# Ledger entries past the horizon are forgotten in batches: once the oldest is this far past it,
# all that are go. One O(ledger) scan an hour at most, not one per event; for a horizon shorter than
# 8 hours, an eighth of it (and at least a minute), so that what is kept stays proportional to it.
PRUNE_SLACK_MS = 3_600_000


def prune_slack_ms(horizon_ms: int) -> int:
    """How far past the horizon an entry may still be kept (``PRUNE_SLACK_MS``)."""
    return min(PRUNE_SLACK_MS, max(60_000, horizon_ms // 8))


NEVER = 2**62
LATE_IGNORED = "late: occurred after the decision's reward window; this surface's late_rule ignores it"


class LoggedFeedback(Protocol):
    """What the ledger reads of a feedback-log entry (``state.records.FeedbackRecord`` is one)."""

    @property
    def surface(self) -> str: ...
    @property
    def item_id(self) -> str: ...
    @property
    def reward(self) -> float: ...
    @property
    def features(self) -> bytes: ...
    @property
    def propensity(self) -> float: ...
    @property
    def signal(self) -> int: ...
    @property
    def occurred_at_ms(self) -> int: ...
    @property
    def decision_id(self) -> str: ...
    @property
    def decided_at_ms(self) -> int: ...
    @property
    def segment(self) -> str: ...
    @property
    def flag(self) -> str: ...
    @property
    def window_close(self) -> bool: ...
    @property
    def received_at_ms(self) -> int: ...
    def event(self, received_at_ms: int | None = None) -> Event: ...
    def context(self) -> npt.NDArray[np.float64] | None: ...
    def closing(self) -> tuple[tuple[str, float], ...]: ...


@dataclass(frozen=True)
class Change:
    """One change learning made to a user's policy state: what the population prior learns too."""

    surface: str
    arm: int
    old: float | None  # None: a new observation; else the reward it had until now
    new: float
    context: npt.NDArray[np.float64] | None
    propensity: float
    segment: str
    # The observation's time (its decision's, else the event's): its weight under time decay.
    at_ms: int = 0


@dataclass(frozen=True)
class Applied:
    """What one logged event did: the fused reward of its item after it, why it trained nothing
    (``flag``), and the policy changes it caused (its own, and windows it closed)."""

    reward: float
    flag: str = ""
    changes: tuple[Change, ...] = ()


@dataclass(slots=True)
class RewardLedger:
    """Per user: each decision-item's fused reward so far, and where its surface's policy learned it."""

    # Per surface, decision-item key -> its reward so far, in order of first feedback.
    items: dict[str, dict[str, ItemReward]] = field(default_factory=dict)
    # How long after its window an entry is kept, and feedback may still change its reward: the
    # service's ``quality.max_age_ms`` (feedback later than that is flagged anyway).
    horizon_ms: int = field(default=LEDGER_HORIZON_MS, compare=False)
    # When the last snapshot stored entries apart (``settle``): learned entries whose window had
    # closed by then may be in Redis and no longer in memory; the caller fetches those back
    # (``restore_item``) before ingesting feedback about them. In the snapshot.
    settled_at_ms: int = field(default=0, compare=False)
    # Counts ``forget_settled`` calls that dropped something: a fetch that overlapped one is redone.
    generation: int = field(default=0, compare=False)
    # Per surface, lower bounds of when its ledger next needs a scan: the earliest window close of
    # an item not learned yet, and the earliest horizon of any item. Derived from the ledger (so
    # not in the snapshot); a bound that is too early only costs a scan that finds nothing to do.
    _due: dict[str, list[int]] = field(default_factory=dict, repr=False, compare=False)

    def ingest(
        self,
        r: LoggedFeedback,
        policy: Policy,
        surface: SurfaceConfig,
        state: PolicyState,
        weight: Callable[[int], float],
    ) -> Applied | None:
        """Apply one logged entry to the ledger and to ``state``, the surface's policy state (the rule
        is in the module docstring); None when it cannot train.

        It cannot when the item is no longer configured, or when a contextual policy would need the
        decision's features and the event was never joined to its decision (such events stay in the
        log for analysis; they train nothing). ``weight(at_ms)`` is what an observation at ``at_ms``
        counts as (time decay; it may rescale ``state`` in place).
        """
        arm = surface.index.get(r.item_id)
        closing = [(surface.index[i], i, p) for i, p in r.closing() if i in surface.index] if r.window_close else []
        if not closing and arm is None:
            return None
        context = r.context()
        if policy.contextual and (context is None or context.shape != (surface.context_dim,)):
            return None
        closed = self._close_windows(policy, surface, state, weight, r.received_at_ms)
        if r.flag:
            return Applied(0.0, r.flag, closed)
        if r.window_close:
            return self._close_items(policy, surface, state, weight, r, closing, closed)
        assert arm is not None
        if not r.decided_at_ms:
            if surface.reward.rule(Signal(r.signal)).weight == 0.0:
                return Applied(r.reward, "", closed)
            at_weight = weight(r.occurred_at_ms)
            policy.update(state, arm, r.reward, context=context, propensity=r.propensity or None, weight=at_weight)
            change = Change(surface.name, arm, None, r.reward, context, r.propensity, "", r.occurred_at_ms)
            return Applied(r.reward, "", (*closed, change))
        return self._fuse(policy, surface, state, weight, arm, r, closed)

    def needs_close(self, surface: str, decision_id: str, item_id: str) -> bool:
        """Whether the decision-item has not been learned yet (its window may close empty)."""
        item = self.items.get(surface, {}).get(item_key(decision_id, item_id))
        return item is None or item.step is None

    def outcome_of(self, surface: str, decision_id: str, item_id: str, event_id: str) -> Applied | None:
        """What a logged event of the decision-item came to, for answering its retry: the item's fused
        reward so far, flagged when the item holds the event as one that trains nothing; None when
        the ledger does not hold the item."""
        item = self.items.get(surface, {}).get(item_key(decision_id, item_id))
        if item is None:
            return None
        ignored = any(e.event_id == event_id for e in item.fusion.ignored)
        return Applied(item.fusion.reward, LATE_IGNORED if ignored else "")

    def to_json(self, surfaces: Mapping[str, SurfaceConfig]) -> dict[str, list[list[Any]]]:
        """The snapshot's ``ledgers``: the entries not stored apart (``settle``). Lists, not objects,
        since a ledger's order (of first feedback) is part of the state."""
        ledgers = {name: [[k, i.to_json()] for k, i in items.items() if not self._apart(surfaces.get(name), i)]
                   for name, items in self.items.items()}  # fmt: skip
        return {name: entries for name, entries in ledgers.items() if entries}

    def settle(self, surfaces: Mapping[str, SurfaceConfig], now_ms: int) -> list[Settled]:
        """The learned entries whose window is closed at ``now_ms``, for a snapshot to store in Redis
        beside it. They stay in memory until that write succeeds (``forget_settled``); the snapshot's
        ledgers (``to_json``) leave them out. Entries in their window stay in memory, so feedback
        within the window and the window close never wait for Redis."""
        self.settled_at_ms = max(self.settled_at_ms, now_ms)
        return [Settled(name, key, item, item.mark()) for name, ledger in self.items.items()
                for key, item in ledger.items() if self._apart(surfaces.get(name), item)]  # fmt: skip

    def _apart(self, surface: SurfaceConfig | None, item: ItemReward) -> bool:
        """Whether the last ``settle`` stores the entry in Redis (a surface no longer configured keeps all)."""
        return surface is not None and item.step is not None and self._closed_by_settle(surface, item.decided_at_ms)

    def _closed_by_settle(self, surface: SurfaceConfig, decided_at_ms: int) -> bool:
        return DecisionWindow.of(decided_at_ms, surface.reward).closes_at_ms <= self.settled_at_ms

    def forget_settled(self, settled: Iterable[Settled]) -> None:
        """A snapshot stored these entries in Redis: drop the ones unchanged since from memory."""
        dropped = False
        for s in settled:
            ledger = self.items.get(s.surface, {})
            item = ledger.get(s.key)
            if item is s.item and item.mark() == s.mark:
                del ledger[s.key]
                dropped = True
                if not ledger:
                    del self.items[s.surface]
        if dropped:
            self.generation += 1

    def may_be_settled(self, surface: SurfaceConfig, decision_id: str, item_id: str, decided_at_ms: int) -> bool:
        """Whether the decision-item's entry may be in Redis only (``restore_item`` brings it back)."""
        if not decided_at_ms or not self._closed_by_settle(surface, decided_at_ms):
            return False
        return item_key(decision_id, item_id) not in self.items.get(surface.name, {})

    def restore_item(self, surface: SurfaceConfig, decision_id: str, item_id: str, item: ItemReward) -> None:
        """An entry fetched back from Redis; one still in memory is newer and stays."""
        ledger = self.items.setdefault(surface.name, {})
        key = item_key(decision_id, item_id)
        if key not in ledger:
            ledger[key] = item
            self._lower_due(surface, horizon_ms=_horizon_ms(item.decided_at_ms, surface.reward, self.horizon_ms))

    def restore(self, name: str, raw: list[list[Any]], surface: SurfaceConfig) -> None:
        """One surface's ledger from its ``to_json`` form."""
        self.items[name] = {key: ItemReward.from_json(item, surface) for key, item in raw}

    # -- the steps of ingest: each gets the surface's policy, its state and the weight rule ----------

    def _fuse(
        self,
        policy: Policy,
        surface: SurfaceConfig,
        state: PolicyState,
        weight: Callable[[int], float],
        arm: int,
        r: LoggedFeedback,
        closed: tuple[Change, ...],
    ) -> Applied:
        config = surface.reward
        if _past_horizon(r.decided_at_ms, config, r.received_at_ms, self.horizon_ms):
            days = self.horizon_ms / 86_400_000
            return Applied(0.0, f"late: the decision's reward window closed more than {days:g} days ago", closed)
        item = self._ledger_item(surface, arm, r, r.item_id, r.propensity)
        event = r.event()
        try:
            old, new = item.fusion.add(event)
        except EventConflict as exc:
            return Applied(item.fusion.reward, f"event_id: {exc}", closed)
        if not item.fusion.trains(event):
            return Applied(new, LATE_IGNORED, closed)
        change = self._learn_item(policy, surface, state, weight, item, old, new)
        return Applied(new, "", closed if change is None else (*closed, change))

    def _ledger_item(
        self, surface: SurfaceConfig, arm: int, r: LoggedFeedback, item_id: str, propensity: float
    ) -> ItemReward:
        """The ledger entry of one item of the entry's decision, new if it has none."""
        ledger = self.items.setdefault(surface.name, {})
        key = item_key(r.decision_id, item_id)
        item = ledger.get(key)
        if item is None:
            fusion = FusionState(surface.reward, r.decided_at_ms)
            item = ledger[key] = ItemReward(fusion, arm, r.features, propensity, r.segment)
            # New, so not learned yet: whatever the caller does next, the bounds stay low enough.
            closes_at = DecisionWindow.of(r.decided_at_ms, surface.reward).closes_at_ms
            self._lower_due(
                surface,
                unlearned_ms=closes_at,
                horizon_ms=_horizon_ms(r.decided_at_ms, surface.reward, self.horizon_ms),
            )
        return item

    def _lower_due(self, surface: SurfaceConfig, unlearned_ms: int = NEVER, horizon_ms: int = NEVER) -> None:
        due = self._due.get(surface.name)
        if due is not None:  # else computed from the ledger when next needed
            due[0], due[1] = min(due[0], unlearned_ms), min(due[1], horizon_ms)

    def _close_items(
        self,
        policy: Policy,
        surface: SurfaceConfig,
        state: PolicyState,
        weight: Callable[[int], float],
        r: LoggedFeedback,
        closing: list[tuple[int, str, float]],
        closed: tuple[Change, ...],
    ) -> Applied:
        """The decision's window closed: each item of ``closing`` (arm, item, propensity) learns the
        default reward, in order, unless it was learned already."""
        default = surface.reward.default_reward
        if _past_horizon(r.decided_at_ms, surface.reward, r.received_at_ms, self.horizon_ms):
            return Applied(0.0, "", closed)
        items = (self._ledger_item(surface, arm, r, item_id, propensity) for arm, item_id, propensity in closing)
        learned = (_learn_first(policy, surface, state, weight, i, default) for i in items if i.step is None)
        return Applied(default, "", (*closed, *learned))

    def _learn_item(
        self,
        policy: Policy,
        surface: SurfaceConfig,
        state: PolicyState,
        weight: Callable[[int], float],
        item: ItemReward,
        old: float,
        new: float,
    ) -> Change | None:
        if item.step is None:
            if not item.fusion.rewarded:
                return None  # impressions only, so far: the window's close decides
            return _learn_first(policy, surface, state, weight, item, new)
        if new == old:
            return None
        context, propensity = item.context(), item.propensity or None
        age = state.n_updates - item.step - 1
        at_weight = weight(item.decided_at_ms)
        policy.revise(state, item.arm, old, new, context=context, propensity=propensity, age=age, weight=at_weight)
        return Change(surface.name, item.arm, old, new, context, item.propensity, item.segment, item.decided_at_ms)

    def _close_windows(
        self, policy: Policy, surface: SurfaceConfig, state: PolicyState, weight: Callable[[int], float], now_ms: int
    ) -> tuple[Change, ...]:
        """Learn the default reward of the surface's items whose window closed without a reward,
        and forget items no feedback can change any more (in batches: ``prune_slack_ms``).

        Which items learn depends on the ledger and ``now_ms`` only; the due bounds only skip
        scans that would find nothing, so a restored state (bounds recomputed) learns the same.
        """
        ledger = self.items.get(surface.name)
        if not ledger:
            return ()
        config = surface.reward
        due = self._due.get(surface.name) or _ledger_due(ledger, config, self.horizon_ms)
        self._due[surface.name] = due
        changes: tuple[Change, ...] = ()
        # Scans of every entry: DecisionWindow's rules written out (closed: now > decided + window;
        # past the horizon: now > decided + window + horizon), without an object per entry.
        window_ms = config.window_ms
        oldest = now_ms - window_ms - self.horizon_ms  # decided before it: past the horizon
        if now_ms > due[0]:
            changes = tuple(
                _learn_first(policy, surface, state, weight, item, config.default_reward)
                for item in ledger.values()
                if item.step is None and oldest <= item.decided_at_ms < now_ms - window_ms
            )
        slack_ms = prune_slack_ms(self.horizon_ms)
        if now_ms > due[1] + slack_ms:
            for key in [k for k, item in ledger.items() if item.decided_at_ms < oldest]:
                del ledger[key]
        if now_ms > due[0] or now_ms > due[1] + slack_ms:
            self._due[surface.name] = _ledger_due(ledger, config, self.horizon_ms)
        return changes


def _learn_first(
    policy: Policy,
    surface: SurfaceConfig,
    state: PolicyState,
    weight: Callable[[int], float],
    item: ItemReward,
    reward: float,
) -> Change:
    """The item's one observation, with its first reward; later changes revise it."""
    at_weight = weight(item.decided_at_ms)
    context = item.context()
    item.step = state.n_updates
    policy.update(state, item.arm, reward, context=context, propensity=item.propensity or None, weight=at_weight)
    return Change(surface.name, item.arm, None, reward, context, item.propensity, item.segment, item.decided_at_ms)


def _horizon_ms(decided_at_ms: int, config: RewardConfig, horizon_ms: int) -> int:
    return DecisionWindow.of(decided_at_ms, config).closes_at_ms + horizon_ms


def _past_horizon(decided_at_ms: int, config: RewardConfig, now_ms: int, horizon_ms: int) -> bool:
    """Whether feedback received at ``now_ms`` is too late to change the decision's reward at all."""
    return now_ms > _horizon_ms(decided_at_ms, config, horizon_ms)


def _ledger_due(ledger: Mapping[str, ItemReward], config: RewardConfig, horizon_ms: int) -> list[int]:
    """``RewardLedger._due`` of one surface, from its ledger: the earliest window close of an entry not
    learned yet, and the earliest horizon (``_horizon_ms``) of any."""
    if not ledger:
        return [NEVER, NEVER]
    decided = [i.decided_at_ms for i in ledger.values()]
    unlearned = [d for d, i in zip(decided, ledger.values(), strict=True) if i.step is None]
    window_ms = config.window_ms
    return [min(unlearned) + window_ms if unlearned else NEVER, min(decided) + window_ms + horizon_ms]
