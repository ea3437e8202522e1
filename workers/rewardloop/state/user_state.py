"""One user's learned state across surfaces, its snapshot format, and log replay.

A user's state is rebuilt exactly from Redis: the latest snapshot, then every feedback
event logged after the snapshot's log position, replayed through the same deterministic
``UserState.learn``. Snapshot format (versioned, never pickled)::

    b"RLUS" | u16 version | u32 header length | JSON header | policy state blobs

The JSON header holds the feedback-log position the snapshot covers (``last_id``), the
fingerprint of every surface configuration it was taken under (``known``), where each
surface's policy blob lies, the reward ledgers and the burst detector's recent action
times. A surface whose configuration changed since (other catalogue, hyper-parameters or
reward rules) is rebuilt from the whole log instead. Version 1 snapshots (before reward
fusion) are read as stale for every surface.

**How feedback trains** (``learn``; the rule of ``rewards/fusion.py`` applied per decision-item):

- An event joined to its decision is folded into that decision-item's :class:`ItemReward`
  (its ``FusionState``, the decision's context, propensity and segment, and the arm). At the
  first event that gives the item a reward (a training event of a weighted signal), the policy
  learns that reward once (``Policy.update``) and the item remembers the update's position
  (``step``). Every later event that changes the fused reward is learned as a correction of
  that very observation (``Policy.revise``, ``age`` = updates since), so the policy ends up
  with the final fused reward whatever order the events came in, and a retry changes nothing.
- A decision-item that got no reward in its window learns the surface's ``default_reward``: the
  shard logs a *window-close* entry for it once the window is over (``ShardCore``), and learning
  that entry (here) is the item's one observation; feedback that still arrives corrects it as
  above. Items that got only zero-weight signals (impressions) also learn it at the user's next
  logged event after the window. The log is the clock, so a replay closes them at the same point.
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

**Real-time activity** (``realtime.py``; kept only when a surface uses real-time features): every
decision and every feedback event the ingest did not flag, the latter positive when its own reward
is > 0. It is not replayed from the snapshot's position: the shard rebuilds it on load from the
last horizon of the decision and feedback logs (``rebuild_activity``), which give the same set of
events as the live run saw, so the features are the same; the snapshot keeps only the latest
positive, which may lie beyond the horizon (``since_positive``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from rewardloop.learning.bandits import Policy, PolicyState
from rewardloop.learning.features.realtime import ActivityEvent, RealtimeFeatures, UserActivity
from rewardloop.learning.rewards import (
    BurstDetector,
    DecisionWindow,
    EventConflict,
    FusionState,
    RewardConfig,
    Signal,
    counts_toward_burst,
)
from rewardloop.learning.rewards.decay import decay_weight, epoch_for_update, present_factor
from rewardloop.learning.rewards.quality import DEFAULT_QUALITY, QualityConfig
from rewardloop.state.keys import user_seed
from rewardloop.state.records import LOG_START, FeedbackRecord, stream_id_key
from rewardloop.workers.config import SurfaceConfig

SNAPSHOT_MAGIC = b"RLUS"
SNAPSHOT_VERSION = 2
# A decision's ledger entry is kept this long after its window closes: feedback older than
# that is flagged at ingest (quality.py), so nothing could still change its reward.
LEDGER_HORIZON_MS = DEFAULT_QUALITY.max_age_ms
# Ledger entries past the horizon are forgotten in batches: once the oldest is this far past it,
# all that are go. One O(ledger) scan an hour at most, not one per event.
PRUNE_SLACK_MS = 3_600_000
NEVER = 2**62
_PREAMBLE = struct.Struct("<4sHI")


@dataclass
class ItemReward:
    """The reward of one decision-item so far, and where the policy learned it."""

    fusion: FusionState
    arm: int
    features: bytes
    propensity: float
    segment: str
    # The policy state's n_updates just before it learned this item; None: not learned yet.
    step: int | None = None

    def context(self) -> npt.NDArray[np.float64] | None:
        return np.frombuffer(self.features, dtype="<f8") if self.features else None

    @property
    def decided_at_ms(self) -> int:
        return self.fusion.decided_at_ms or 0

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.arm, "x": self.features.hex(), "p": self.propensity, "sg": self.segment, "n": self.step,
            "f": self.fusion.to_dict(),
        }  # fmt: skip

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], surface: SurfaceConfig) -> ItemReward:
        fusion = FusionState.from_dict(raw["f"], surface.reward)
        return cls(fusion, int(raw["a"]), bytes.fromhex(raw["x"]), float(raw["p"]), str(raw["sg"]), raw["n"])


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


@dataclass
class UserState:
    pseudonym: str
    policies: dict[str, PolicyState]
    rng: np.random.Generator
    last_id: str = LOG_START
    since_snapshot: int = 0
    dirty: bool = False
    # Surfaces whose snapshot was unusable: every logged reward up to last_id replays too.
    stale: frozenset[str] = field(default_factory=frozenset)
    # Per surface, decision-item key -> its reward so far, in order of first feedback.
    ledgers: dict[str, dict[str, ItemReward]] = field(default_factory=dict)
    # Recent action times, to flag bursts no human makes (quality.py).
    bursts: BurstDetector = field(default_factory=BurstDetector)
    # Per surface with time decay: the epoch (Unix ms) its policy state's weights are relative to.
    epochs: dict[str, int] = field(default_factory=dict)
    # Recent decisions and feedback, for real-time features (module docstring).
    activity: UserActivity = field(default_factory=UserActivity)
    # Per surface, lower bounds of when its ledger next needs a scan: the earliest window close of
    # an item not learned yet, and the earliest horizon of any item. Derived from the ledger (so
    # not in the snapshot); a bound that is too early only costs a scan that finds nothing to do.
    _due: dict[str, list[int]] = field(default_factory=dict, repr=False, compare=False)

    def observe_decision(self, realtime: RealtimeFeatures, decided_at_ms: int, item_id: str) -> None:
        realtime.observe(self.activity, ActivityEvent(decided_at_ms, "decision", item_id=item_id))

    def observe_feedback(self, realtime: RealtimeFeatures, r: FeedbackRecord) -> None:
        """Count a logged event in the user's activity, unless the ingest flagged it."""
        if r.user_action:
            event = ActivityEvent(r.occurred_at_ms, "feedback", r.positive, r.reward, r.item_id)
            realtime.observe(self.activity, event)

    def weight(self, policy: Policy, surface: SurfaceConfig, at_ms: int) -> float:
        """What an observation at ``at_ms`` counts as in the surface's state (1.0 without decay),
        moving the epoch first when it is too far behind (module docstring)."""
        half_life = surface.reward.half_life_seconds
        if half_life is None:
            return 1.0
        epoch, factor = epoch_for_update(self.epochs.get(surface.name), at_ms, half_life)
        if factor is not None:
            state = self.policies[surface.name]
            state.arrays = policy.scale(state, factor).arrays
        self.epochs[surface.name] = epoch
        return decay_weight(at_ms, half_life, epoch)

    def decision_state(self, policy: Policy, surface: SurfaceConfig, now_ms: int) -> PolicyState:
        """The surface's state as of ``now_ms``: under time decay, every observation weighs
        ``2 ** -((now - t) / half_life)``; otherwise the state itself (not a copy)."""
        state = self.policies[surface.name]
        factor = present_factor(self.epochs.get(surface.name), now_ms, surface.reward.half_life_seconds)
        return state if factor is None else policy.scale(state, factor)

    def observe_action(self, r: FeedbackRecord) -> bool:
        """Count the event as one of the user's actions; True when it is part of a burst."""
        return counts_toward_burst(Signal(r.signal)) and self.bursts.observe("", r.occurred_at_ms)

    def learn(
        self, policies: Mapping[str, Policy], surfaces: Mapping[str, SurfaceConfig], r: FeedbackRecord
    ) -> Applied | None:
        """Apply one logged event (the rule is in the module docstring); None when it cannot train.

        It cannot when the surface or item is no longer configured, or when a contextual
        policy would need the decision's features and the event was never joined to its
        decision (such events stay in the log for analysis; they train nothing).
        """
        surface = surfaces.get(r.surface)
        arm = surface.index.get(r.item_id) if surface else None
        if surface is None or arm is None:
            return None
        policy = policies[r.surface]
        context = r.context()
        if policy.contextual and (context is None or context.shape != (surface.context_dim,)):
            return None
        closed = self._close_windows(policy, surface, r.received_at_ms)
        if r.flag:
            return Applied(0.0, r.flag, closed)
        state = self.policies[r.surface]
        if r.window_close:
            return self._close_item(policy, surface, arm, r, closed)
        if not r.decided_at_ms:
            if surface.reward.rule(Signal(r.signal)).weight == 0.0:
                return Applied(r.reward, "", closed)
            weight = self.weight(policy, surface, r.occurred_at_ms)
            policy.update(state, arm, r.reward, context=context, propensity=r.propensity or None, weight=weight)
            change = Change(r.surface, arm, None, r.reward, context, r.propensity, "", r.occurred_at_ms)
            return Applied(r.reward, "", (*closed, change))
        return self._fuse(policy, surface, arm, r, closed)

    def _fuse(
        self, policy: Policy, surface: SurfaceConfig, arm: int, r: FeedbackRecord, closed: tuple[Change, ...]
    ) -> Applied:
        config = surface.reward
        if _past_horizon(r.decided_at_ms, config, r.received_at_ms):
            return Applied(0.0, "late: the decision's reward window closed more than 7 days ago", closed)
        item = self._ledger_item(surface, arm, r)
        event = r.event()
        try:
            old, new = item.fusion.add(event)
        except EventConflict as exc:
            return Applied(item.fusion.reward, f"event_id: {exc}", closed)
        if not item.fusion.trains(event):
            late = "late: occurred after the decision's reward window; this surface's late_rule ignores it"
            return Applied(new, late, closed)
        change = self._learn_item(policy, surface, item, old, new)
        return Applied(new, "", closed if change is None else (*closed, change))

    def _ledger_item(self, surface: SurfaceConfig, arm: int, r: FeedbackRecord) -> ItemReward:
        """The ledger entry of the event's decision-item, new if it has none."""
        ledger = self.ledgers.setdefault(surface.name, {})
        key = _item_key(r.decision_id, r.item_id)
        item = ledger.get(key)
        if item is None:
            fusion = FusionState(surface.reward, r.decided_at_ms)
            item = ledger[key] = ItemReward(fusion, arm, r.features, r.propensity, r.segment)
            # New, so not learned yet: whatever the caller does next, the bounds stay low enough.
            closes_at = DecisionWindow.of(r.decided_at_ms, surface.reward).closes_at_ms
            self._lower_due(surface, unlearned_ms=closes_at, horizon_ms=_horizon_ms(r.decided_at_ms, surface.reward))
        return item

    def _lower_due(self, surface: SurfaceConfig, unlearned_ms: int = NEVER, horizon_ms: int = NEVER) -> None:
        due = self._due.get(surface.name)
        if due is not None:  # else computed from the ledger when next needed
            due[0], due[1] = min(due[0], unlearned_ms), min(due[1], horizon_ms)

    def _close_item(
        self, policy: Policy, surface: SurfaceConfig, arm: int, r: FeedbackRecord, closed: tuple[Change, ...]
    ) -> Applied:
        """The window of the decision-item closed: the default reward, unless it was learned already."""
        if _past_horizon(r.decided_at_ms, surface.reward, r.received_at_ms):
            return Applied(0.0, "", closed)
        item = self._ledger_item(surface, arm, r)
        if item.step is not None:
            return Applied(item.fusion.reward, "", closed)
        change = self._learn_first(policy, surface, item, surface.reward.default_reward)
        return Applied(surface.reward.default_reward, "", (*closed, change))

    def needs_close(self, surface: SurfaceConfig, decision_id: str, item_id: str) -> bool:
        """Whether the decision-item has not been learned yet (its window may close empty)."""
        item = self.ledgers.get(surface.name, {}).get(_item_key(decision_id, item_id))
        return item is None or item.step is None

    def _learn_item(
        self, policy: Policy, surface: SurfaceConfig, item: ItemReward, old: float, new: float
    ) -> Change | None:
        if item.step is None:
            if not item.fusion.rewarded:
                return None  # impressions only, so far: the window's close decides
            return self._learn_first(policy, surface, item, new)
        if new == old:
            return None
        state, context, propensity = self.policies[surface.name], item.context(), item.propensity or None
        age = state.n_updates - item.step - 1
        weight = self.weight(policy, surface, item.decided_at_ms)
        policy.revise(state, item.arm, old, new, context=context, propensity=propensity, age=age, weight=weight)
        return Change(surface.name, item.arm, old, new, context, item.propensity, item.segment, item.decided_at_ms)

    def _learn_first(self, policy: Policy, surface: SurfaceConfig, item: ItemReward, reward: float) -> Change:
        """The item's one observation, with its first reward; later changes revise it."""
        weight = self.weight(policy, surface, item.decided_at_ms)
        state, context = self.policies[surface.name], item.context()
        item.step = state.n_updates
        policy.update(state, item.arm, reward, context=context, propensity=item.propensity or None, weight=weight)
        return Change(surface.name, item.arm, None, reward, context, item.propensity, item.segment, item.decided_at_ms)

    def _close_windows(self, policy: Policy, surface: SurfaceConfig, now_ms: int) -> tuple[Change, ...]:
        """Learn the default reward of the surface's items whose window closed without a reward,
        and forget items no feedback can change any more (in batches: ``PRUNE_SLACK_MS``).

        Which items learn depends on the ledger and ``now_ms`` only; the due bounds only skip
        scans that would find nothing, so a restored state (bounds recomputed) learns the same.
        """
        ledger = self.ledgers.get(surface.name)
        if not ledger:
            return ()
        config = surface.reward
        due = self._due.get(surface.name) or _ledger_due(ledger, config)
        self._due[surface.name] = due
        changes: tuple[Change, ...] = ()
        if now_ms > due[0]:
            changes = tuple(
                self._learn_first(policy, surface, item, config.default_reward)
                for item in ledger.values()
                if item.step is None
                and DecisionWindow.of(item.decided_at_ms, config).is_closed(now_ms)
                and not _past_horizon(item.decided_at_ms, config, now_ms)
            )
        if now_ms > due[1] + PRUNE_SLACK_MS:
            for key in [k for k, item in ledger.items() if _past_horizon(item.decided_at_ms, config, now_ms)]:
                del ledger[key]
        if now_ms > due[0] or now_ms > due[1] + PRUNE_SLACK_MS:
            self._due[surface.name] = _ledger_due(ledger, config)
        return changes

    def item_reward(self, surface: str, decision_id: str, item_id: str) -> float | None:
        item = self.ledgers.get(surface, {}).get(_item_key(decision_id, item_id))
        return None if item is None else item.fusion.reward


def _item_key(decision_id: str, item_id: str) -> str:
    return f"{decision_id}/{item_id}"


def _horizon_ms(decided_at_ms: int, config: RewardConfig) -> int:
    return DecisionWindow.of(decided_at_ms, config).closes_at_ms + LEDGER_HORIZON_MS


def _past_horizon(decided_at_ms: int, config: RewardConfig, now_ms: int) -> bool:
    """Whether feedback received at ``now_ms`` is too late to change the decision's reward at all."""
    return now_ms > _horizon_ms(decided_at_ms, config)


def _ledger_due(ledger: Mapping[str, ItemReward], config: RewardConfig) -> list[int]:
    """``UserState._due`` of one surface, from its ledger."""
    unlearned = (DecisionWindow.of(i.decided_at_ms, config).closes_at_ms for i in ledger.values() if i.step is None)
    horizons = (_horizon_ms(i.decided_at_ms, config) for i in ledger.values())
    return [min(unlearned, default=NEVER), min(horizons, default=NEVER)]


def new_user_state(
    pseudonym: str, policies: Mapping[str, Policy], seed: int, quality: QualityConfig = DEFAULT_QUALITY
) -> UserState:
    return UserState(
        pseudonym=pseudonym,
        policies={name: policy.new_state() for name, policy in policies.items()},
        rng=np.random.default_rng([seed, user_seed(pseudonym)]),
        bursts=BurstDetector(quality),
    )


def encode_snapshot(state: UserState, policies: Mapping[str, Policy], surfaces: Mapping[str, SurfaceConfig]) -> bytes:
    blobs = [(name, policies[name].dump_state(s)) for name, s in sorted(state.policies.items())]
    offsets, position = {}, 0
    for name, blob in blobs:
        offsets[name] = [position, len(blob)]
        position += len(blob)
    header = json.dumps(
        {
            "last_id": state.last_id,
            "known": {name: surfaces[name].fingerprint for name in sorted(state.policies)},
            "states": offsets,
            # Lists, not objects: a ledger's order (of first feedback) is part of the state.
            "ledgers": {
                name: [[k, item.to_json()] for k, item in ledger.items()] for name, ledger in state.ledgers.items()
            },
            "bursts": state.bursts.to_lists(),
            "epochs": dict(sorted(state.epochs.items())),
            "last_positive_ms": state.activity.last_positive_ms,
        },
        sort_keys=True,
    ).encode()
    return _PREAMBLE.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, len(header)) + header + b"".join(b for _, b in blobs)


def restore_from_snapshot(
    blob: bytes | None,
    pseudonym: str,
    policies: Mapping[str, Policy],
    surfaces: Mapping[str, SurfaceConfig],
    seed: int,
    quality: QualityConfig = DEFAULT_QUALITY,
) -> UserState:
    """State as of the snapshot; `state.stale` names surfaces that need the whole log."""
    state = new_user_state(pseudonym, policies, seed, quality)
    if blob is None:
        return state
    magic, version, header_len = _PREAMBLE.unpack_from(blob)
    if magic != SNAPSHOT_MAGIC or version not in (1, SNAPSHOT_VERSION):
        raise ValueError(f"not a user snapshot of version {SNAPSHOT_VERSION}: magic={magic!r} version={version}")
    body_start = _PREAMBLE.size + header_len
    header = json.loads(blob[_PREAMBLE.size : body_start])
    stale = set()
    ledgers, epochs = header.get("ledgers", {}), header.get("epochs", {})
    for name, surface in surfaces.items():
        if version != SNAPSHOT_VERSION or header["known"].get(name) != surface.fingerprint:
            stale.add(name)
            continue
        if name in header["states"]:
            offset, length = header["states"][name]
            start = body_start + offset
            state.policies[name] = policies[name].load_state(blob[start : start + length])
        if name in ledgers:
            state.ledgers[name] = {key: ItemReward.from_json(raw, surface) for key, raw in ledgers[name]}
        if name in epochs:
            state.epochs[name] = int(epochs[name])
    state.bursts = BurstDetector.from_lists(header.get("bursts", {}), quality)
    state.activity.last_positive_ms = int(header.get("last_positive_ms", state.activity.last_positive_ms))
    state.last_id = header["last_id"]
    state.stale = frozenset(stale)
    return state


def replay(
    state: UserState,
    rewards: Iterable[FeedbackRecord],
    policies: Mapping[str, Policy],
    surfaces: Mapping[str, SurfaceConfig],
) -> None:
    """Apply logged rewards the snapshot does not cover (all of them for stale surfaces)."""
    covered = stream_id_key(state.last_id)
    last = covered
    for r in rewards:
        key = stream_id_key(r.stream_id)
        if key > covered:
            state.observe_action(r)  # the snapshot's detector has seen the rest
            if r.positive:  # since_positive, beyond the horizon too
                state.activity.last_positive_ms = max(state.activity.last_positive_ms, r.occurred_at_ms)
        if key > covered or r.surface in state.stale:
            state.learn(policies, surfaces, r)
        if key > last:
            last, state.last_id = key, r.stream_id
    if state.stale:
        state.stale = frozenset()
        state.dirty = True


def replay_start(state: UserState) -> str:
    """First feedback-log id `replay` needs, as an XRANGE start."""
    return "-" if state.stale else f"({state.last_id}"
