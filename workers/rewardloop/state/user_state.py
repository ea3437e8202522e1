"""One user's learned state across surfaces.

A ``UserState`` holds, per surface, the user's policy state, its reward ledger
(``learning/rewards/ledger.py``: how feedback trains, time decay) and its decay epoch, plus the
burst detector and real-time activity; ``state/snapshots.py`` stores and rebuilds it.

**Policy experiments** (``learning/experiments/policies.py``): a user in a variant that decides a
surface with another policy has a second state for that surface, under the variant's key
(``surface@experiment/variant/created``), made at its first decision or learned event; the
feedback to that policy's decisions trains it (``FeedbackRecord.state_key``), the surface's own
state is left alone. A variant's state the shard no longer serves (its experiment stopped or was
deleted) is dropped at the user's next touch or snapshot (``forget_unserved``).

**Real-time activity** (``realtime.py``; kept only when a surface uses real-time features): every
decision and every feedback event the ingest did not flag, the latter positive when its own reward
is > 0. It is not replayed from the snapshot's position: the shard rebuilds it on load from the
last horizon of the decision and feedback logs (``rebuild_activity``), which give the same set of
events as the live run saw, so the features are the same; the snapshot keeps only the latest
positive, which may lie beyond the horizon (``since_positive``).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rewardloop.learning.bandits import Policy, PolicyState
from rewardloop.learning.experiments.policies import is_variant_key
from rewardloop.learning.features.realtime import ActivityEvent, RealtimeFeatures, UserActivity
from rewardloop.learning.rewards import BurstDetector, Signal, counts_toward_burst
from rewardloop.learning.rewards.decay import decay_weight, epoch_for_update, present_factor
from rewardloop.learning.rewards.ledger import Applied, RewardLedger
from rewardloop.learning.rewards.quality import DEFAULT_QUALITY, QualityConfig
from rewardloop.learning.surface import SurfaceConfig
from rewardloop.state.keys import user_seed
from rewardloop.state.records import LOG_START, FeedbackRecord

# Measured per-object costs (footprint): a user without evidence beyond its arrays (RNG, dicts,
# detector), a numpy array's own header, one ledger entry (decision-item) with its first event, and
# one without events (an item a window close taught the default reward: ~800 B, tracemalloc over
# 7,000 of them made by ShardCore.close_due_windows).
USER_BYTES = 1_200
ARRAY_BYTES = 112
LEDGER_ENTRY_BYTES = 1_400
DEFAULT_ENTRY_BYTES = 800


@dataclass(slots=True)
class UserState:
    pseudonym: str
    policies: dict[str, PolicyState]
    # The user's RNG (``rng``): a Generator while in use, its state packed at rest (``rest``).
    _rng: np.random.Generator | None = None
    _rng_at_rest: bytes = b""
    last_id: str = LOG_START
    since_snapshot: int = 0
    dirty: bool = False
    # Surfaces whose snapshot was unusable: every logged reward up to last_id replays too.
    stale: frozenset[str] = frozenset()
    # Each decision-item's reward so far, per surface, and where the policy learned it.
    ledger: RewardLedger = field(default_factory=RewardLedger)
    # Recent action times, to flag bursts no human makes (quality.py).
    bursts: BurstDetector = field(default_factory=BurstDetector)
    # Per surface with time decay: the epoch (Unix ms) its policy state's weights are relative to.
    epochs: dict[str, int] = field(default_factory=dict)
    # Recent decisions and feedback, for real-time features (module docstring).
    activity: UserActivity = field(default_factory=UserActivity)
    # Per surface with learned segments: ((model version, created_ms), n_updates, membership) last computed.
    memberships: dict[str, tuple[tuple[int, int], int, np.ndarray]] = field(default_factory=dict)

    def footprint(self) -> int:
        """Bytes this state takes in memory, estimated from what grows: its policy states (packed at
        rest: ``rest``), its reward ledgers (by entry: with events or without; in-memory entries are
        those within their window or not yet snapshotted, so few) and its real-time activity. The
        constants were measured with tracemalloc (``bench/footprint.py``)."""
        arrays = sum(s.nbytes() + ARRAY_BYTES * (1 if s.at_rest else len(s.arrays)) for s in self.policies.values())
        ledgers = sum(
            LEDGER_ENTRY_BYTES if len(item.fusion) else DEFAULT_ENTRY_BYTES
            for items in self.ledger.items.values()
            for item in items.values()
        )
        return USER_BYTES + arrays + ledgers + self.activity.keys.nbytes

    @property
    def rng(self) -> np.random.Generator:
        """The user's random generator (decisions draw from it), the same stream across rests."""
        if self._rng is None:
            self._rng = _unpack_rng(self._rng_at_rest)
            self._rng_at_rest = b""
        return self._rng

    def restore_rng(self, state: Mapping[str, Any]) -> None:
        """Continue the stream of a saved generator (``bit_generator.state``; PCG64, or it is ignored)."""
        if state.get("bit_generator") == "PCG64":
            self._rng, self._rng_at_rest = None, _pack_state(state)

    def rest(self, policies: Mapping[str, Policy]) -> None:
        """Pack every policy state to the arm rows it learned (``PolicyState``) and the RNG to its
        state: between requests a user costs what they did, not the catalogue; the next read
        unpacks them bit for bit. A variant's state no longer served is dropped (``forget_unserved``)."""
        self.forget_unserved(policies)
        for name, state in self.policies.items():
            policies[name].rest(state)
        if self._rng is not None:
            self._rng_at_rest, self._rng = _pack_state(self._rng.bit_generator.state), None

    def forget_unserved(self, policies: Mapping[str, Policy]) -> bool:
        """Drop the policy states (and their ledgers, epochs, memberships) of policy-experiment
        variants that ``policies`` no longer holds; whether any went (the state is then dirty)."""
        gone = [name for name in self.policies if name not in policies and is_variant_key(name)]
        gone += [name for name in self.ledger.items if name not in policies and is_variant_key(name)]
        for name in gone:
            self.policies.pop(name, None)
            self.ledger.items.pop(name, None)
            self.epochs.pop(name, None)
            self.memberships.pop(name, None)
        if gone:
            self.dirty = True
        return bool(gone)

    def own(self, name: str, policy: Policy) -> PolicyState:
        """The policy state under ``name``; a variant's starts empty at its first use."""
        state = self.policies.get(name)
        if state is None:
            state = self.policies[name] = policy.new_state()
        return state

    def observe_decision(self, realtime: RealtimeFeatures, decided_at_ms: int, item_id: str) -> None:
        realtime.observe(self.activity, ActivityEvent(decided_at_ms, "decision", item_id=item_id))

    def observe_feedback(self, realtime: RealtimeFeatures, r: FeedbackRecord) -> None:
        """Count a logged event in the user's activity, unless the ingest flagged it."""
        if r.user_action:
            event = ActivityEvent(r.occurred_at_ms, "feedback", r.positive, r.reward, r.item_id)
            realtime.observe(self.activity, event)

    def weight(self, policy: Policy, surface: SurfaceConfig, at_ms: int) -> float:
        """What an observation at ``at_ms`` counts as in the surface's state (1.0 without decay),
        moving the epoch first when it is too far behind (``learning/rewards/ledger.py``: time decay)."""
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
        """The surface's state as of ``now_ms``, to decide with: under time decay, every observation
        weighs ``2 ** -((now - t) / half_life)``; otherwise the state itself (an unpacked copy when
        it is at rest, so deciding leaves it packed)."""
        state = self.own(surface.name, policy).dense()
        factor = present_factor(self.epochs.get(surface.name), now_ms, surface.reward.half_life_seconds)
        return state if factor is None else policy.scale(state, factor)

    def observe_action(self, r: FeedbackRecord) -> bool:
        """Count the event as one of the user's actions; True when it is part of a burst."""
        return counts_toward_burst(Signal(r.signal)) and self.bursts.observe("", r.occurred_at_ms)

    def learn(
        self, policies: Mapping[str, Policy], surfaces: Mapping[str, SurfaceConfig], r: FeedbackRecord
    ) -> Applied | None:
        """Apply one logged event through the surface's ledger (``RewardLedger.ingest``); None when it
        cannot train.

        It cannot when the surface or item is no longer configured (or the policy-experiment
        variant whose decision it is no longer served), or when a contextual policy would need the
        decision's features and the event was never joined to its decision (such events stay in
        the log for analysis; they train nothing). ``r.state_key`` names the policy state it trains.
        """
        key = r.state_key
        surface, policy = surfaces.get(key), policies.get(key)
        if surface is None or policy is None:
            return None
        weight = functools.partial(self.weight, policy, surface)
        return self.ledger.ingest(r, policy, surface, self.own(key, policy), weight)


def new_user_state(
    pseudonym: str, policies: Mapping[str, Policy], seed: int, quality: QualityConfig = DEFAULT_QUALITY
) -> UserState:
    return UserState(
        pseudonym=pseudonym,
        policies={name: policy.new_state() for name, policy in policies.items() if not is_variant_key(name)},
        _rng=np.random.default_rng([seed, user_seed(pseudonym)]),
        bursts=BurstDetector(quality),
        ledger=RewardLedger(horizon_ms=quality.max_age_ms),
    )


# PCG64's state at rest: 128-bit state and increment, and the cached half of a 64-bit draw.
_RNG_TAIL = struct.Struct("<BI")


def _pack_state(state: Mapping[str, Any]) -> bytes:
    if state["bit_generator"] != "PCG64":
        raise ValueError(f"a user's RNG is PCG64, got {state['bit_generator']}")
    words = state["state"]["state"].to_bytes(16, "little") + state["state"]["inc"].to_bytes(16, "little")
    return words + _RNG_TAIL.pack(state["has_uint32"], state["uinteger"])


def _unpack_rng(packed: bytes) -> np.random.Generator:
    has_uint32, uinteger = _RNG_TAIL.unpack_from(packed, 32)
    bit_generator = np.random.PCG64(0)
    bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": int.from_bytes(packed[:16], "little"), "inc": int.from_bytes(packed[16:32], "little")},
        "has_uint32": has_uint32,
        "uinteger": uinteger,
    }
    return np.random.Generator(bit_generator)
