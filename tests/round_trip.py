"""A user's snapshot written and read back without Redis, as a shard's write and later load give it."""

from __future__ import annotations

import json
from collections.abc import Mapping

from rewardloop.learning.bandits import Policy
from rewardloop.learning.surface import SurfaceConfig
from rewardloop.state import settled
from rewardloop.state.snapshots import encode_snapshot, restore_from_snapshot
from rewardloop.state.user_state import UserState


def snapshot_round_trip(
    state: UserState,
    policies: Mapping[str, Policy],
    surfaces: Mapping[str, SurfaceConfig],
    seed: int = 1,
    now_ms: int = 1 << 60,
) -> UserState:
    """The snapshot of ``state`` taken at ``now_ms`` (by default after every window closed) restored,
    with every learned ledger entry it stored apart (``state/settled.py``) fetched back from its
    stored form and its decision."""
    entries = state.ledger.settle(surfaces, now_ms)
    stored, defaults = settled.stored_fields(surfaces, entries)
    blob = encode_snapshot(state, policies, surfaces)
    rebuilt = restore_from_snapshot(blob, state.pseudonym, policies, surfaces, seed)
    decisions = {(s.surface, s.key): s.item for s in entries}  # what a later event's join knows
    values = {key_and_name: json.loads(value) for key_and_name, value in stored.items()}
    for key_and_name, value in defaults.items():
        decision_id, name, fingerprint = key_and_name.split(" ")
        for arm, step in settled.default_steps(value).items():
            values[f"{decision_id}/{surfaces[name].items[arm]} {name} {fingerprint}"] = [step, []]
    for key_and_name, value in values.items():
        key, name, _ = key_and_name.rsplit(" ", 2)
        decision_id, item_id = key.split("/", 1)
        d = decisions[(name, key)]
        item = settled.restored_item(value, surfaces[name], d.arm, d.features, d.propensity, d.segment, d.decided_at_ms)
        rebuilt.ledger.restore_item(surfaces[name], decision_id, item_id, item)
    return rebuilt
