"""Learned reward-ledger entries in Redis, out of the shards' memory.

A decision-item's ledger entry (``learning/rewards/ledger.py``) must be kept until no feedback can
change its reward any more: its window plus how late feedback may be (``quality.max_age_ms``, 7
days by default). Kept in memory, that is ~1.4 KB per clicked item for a week. So a snapshot
stores its user's entries that are learned *and* past their window beside it, in the same script
(``Store.write_back``), in one hash per user (``UserKeys.settled``, pruned by the time in the
decision id once no entry can change), in a compact form (the rest of an entry is its decision's,
and feedback that needs the entry is joined to that decision), and leaves them out of the
snapshot's own ledgers:

- an entry with events: field ``<decision>/<item> <surface> <fingerprint>``, value where it was
  learned and its events (``stored_value``), set;
- entries without events (the items a window close taught the default: most of a slate): one field
  per decision, ``<decision> <surface> <fingerprint>``, value ``<arm>:<step>`` pairs, appended to
  (``defaults_value``), so that what later snapshots store of the decision never hides what earlier
  ones did. An item gains events, never loses them, so its own field is newer than its pair.

 the shard then drops them from memory
(``RewardLedger.forget_settled``, only entries unchanged since). Entries in their window stay in
memory and in the snapshot, so feedback within the window and the window close find theirs there.

Before feedback about a decision whose window closed by ``RewardLedger.settled_at_ms`` is learned
(live, right after it is logged; before a window close is decided; replayed on load), its entry is
fetched back (``fetch``) if memory lacks it: the same entry, as of the snapshot that stored it, so
a replay after a crash learns exactly what the live run did. A stored entry is rewritten by every
later snapshot that finds it changed, and an entry in memory is newer than any stored copy, so a
fetched copy never replaces one in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from rewardloop.learning.rewards.entries import ItemReward, Settled, item_key
from rewardloop.learning.rewards.fusion import FusionState
from rewardloop.learning.surface import SurfaceConfig
from rewardloop.state.keys import UserKeys
from rewardloop.state.records import DecisionRecord, FeedbackRecord
from rewardloop.state.retention import day_of
from rewardloop.state.user_state import UserState

# How many fetch rounds may overlap a drop (``forget_settled``) before giving up; each overlap is
# one snapshot write landing during a Redis round trip.
MAX_FETCH_ROUNDS = 8


@dataclass(frozen=True)
class Wanted:
    """A decision-item whose ledger entry an ingest needs, and what its decision says of it."""

    pseudonym: str
    surface: str  # the policy state's key (``DecisionRecord.state_key``): a surface's, or a variant's
    decision_id: str
    item_id: str
    decided_at_ms: int
    features: bytes
    propensity: float
    segment: str


def field(surface: SurfaceConfig, key: str) -> str:
    """The hash field of a ledger entry: decision-item key (its decision id first, which the
    pruning reads the decision time from), surface and configuration fingerprint (an entry learned
    under another configuration is not this one's)."""
    return f"{key} {surface.name} {surface.fingerprint[:12]}"


def defaults_field(surface: SurfaceConfig, decision_id: str) -> str:
    """The hash field of a decision's entries without events (module docstring)."""
    return f"{decision_id} {surface.name} {surface.fingerprint[:12]}"


def day_field(surface: SurfaceConfig, key: str) -> str:
    """The field of an entry in the per-day hashes of an earlier version (``UserKeys.day_settled``)."""
    return f"{surface.name} {surface.fingerprint[:12]} {key}"


def stored_value(item: ItemReward) -> list[Any]:
    """What is stored of a learned entry: where it was learned and its events. The rest (arm,
    features, propensity, segment, decision time) is the decision's, which any feedback that needs
    the entry again is joined to."""
    return [item.step, item.fusion.to_dict()["events"]]


def defaults_value(items: Iterable[ItemReward]) -> bytes:
    """The ``<arm>:<step>`` pairs of a decision's entries without events, comma-separated."""
    return ",".join(f"{i.arm}:{i.step}" for i in items).encode()


def default_steps(value: bytes) -> dict[int, int]:
    """Arm -> step of a ``defaults_value`` (appended to: a later pair of an arm wins)."""
    return {int(arm): int(step) for arm, _, step in (pair.partition(b":") for pair in value.split(b","))}


def restored_item(
    raw: list[Any], surface: SurfaceConfig, arm: int, features: bytes, propensity: float, segment: str,
    decided_at_ms: int,
) -> ItemReward:  # fmt: skip
    """The entry ``stored_value`` stored, completed from its decision."""
    step, events = raw
    fusion = FusionState.from_dict({"decided_at_ms": decided_at_ms, "events": events}, surface.reward)
    return ItemReward(fusion, arm, features, propensity, segment, int(step))


def stored_fields(
    surfaces: Mapping[str, SurfaceConfig], settled: Iterable[Settled]
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """A user's settled entries (of configured surfaces) as the snapshot writes them: the fields to
    set, and the fields to append to (field -> value; module docstring)."""
    fields: dict[str, bytes] = {}
    defaults: dict[str, list[ItemReward]] = {}
    for s in settled:
        surface = surfaces.get(s.surface)
        if surface is None:
            continue
        if len(s.item.fusion):
            fields[field(surface, s.key)] = json.dumps(stored_value(s.item), separators=(",", ":")).encode()
        else:
            defaults.setdefault(defaults_field(surface, s.key.partition("/")[0]), []).append(s.item)
    return fields, {name: defaults_value(items) for name, items in defaults.items()}


def wanted(state: UserState, r: FeedbackRecord, surfaces: Mapping[str, SurfaceConfig]) -> list[Wanted]:
    """The decision-items of a joined event (or each item of a window close) whose entries may be in
    Redis only."""
    items = r.closing() if r.window_close else ((r.item_id, r.propensity),)
    return _wanted(state, surfaces, r.state_key, r.decision_id, r.decided_at_ms, r.features, r.segment, items)


def wanted_items(state: UserState, d: DecisionRecord, surfaces: Mapping[str, SurfaceConfig]) -> list[Wanted]:
    """The items of a decision whose entries may be in Redis only."""
    items = zip(d.items, d.propensities, strict=True)
    return _wanted(state, surfaces, d.state_key, d.decision_id, d.decided_at_ms, d.feature_bytes(), d.segment, items)


def _wanted(
    state: UserState, surfaces: Mapping[str, SurfaceConfig], surface_name: str, decision_id: str, decided_at_ms: int,
    features: bytes, segment: str, items: Iterable[tuple[str, float]],
) -> list[Wanted]:  # fmt: skip
    surface = surfaces.get(surface_name)
    if surface is None or not decided_at_ms:
        return []
    return [
        Wanted(state.pseudonym, surface_name, decision_id, item, decided_at_ms, features, propensity, segment)
        for item, propensity in items
        if state.ledger.may_be_settled(surface, decision_id, item, decided_at_ms)
    ]


def _stored_value(own: bytes | None, defaults: bytes | None, arm: int, by_day: bytes | None) -> list[Any] | None:
    """What is stored of an entry (``stored_value``): its own field, else its pair in its decision's
    defaults, else an earlier version's per-day field; None: nothing."""
    if own is not None:
        return list(json.loads(own))
    if defaults is not None and (step := default_steps(defaults).get(arm)) is not None:
        return [step, []]
    return None if by_day is None else list(json.loads(by_day))


async def fetch(
    redis: aioredis.Redis,
    users: Mapping[str, UserState],
    wants: Callable[[], Iterable[Wanted]],
    surfaces: Mapping[str, SurfaceConfig],
) -> int:
    """Bring the entries ``wants()`` names back from Redis into their users' ledgers; how many came back.

    Call it right before learning, with no await in between: once it returns, every entry named is
    in memory. A snapshot write that lands during the round trip may drop entries (``forget_settled``)
    that ``wants()`` did not name because they were still in memory, and makes the copies fetched
    for those users suspect: then ``wants()`` is asked again and the round trip redone.
    """
    restored = 0
    for _ in range(MAX_FETCH_ROUNDS):
        pending = [w for w in wants() if w.surface in surfaces]
        if not pending:
            return restored
        generations = {p: state.ledger.generation for p, state in users.items()}
        # Read now: a policy-experiment variant's surface may leave ``surfaces`` during the round trip.
        configs = {w.surface: surfaces[w.surface] for w in pending}
        async with redis.pipeline(transaction=False) as pipe:
            for w in pending:
                keys, key, surface = UserKeys(w.pseudonym), item_key(w.decision_id, w.item_id), configs[w.surface]
                pipe.hget(keys.settled, field(surface, key))
                pipe.hget(keys.settled, defaults_field(surface, w.decision_id))
                pipe.hget(keys.day_settled(day_of(w.decided_at_ms)), day_field(surface, key))
            raw = await pipe.execute()
        if any(state.ledger.generation != generations[p] for p, state in users.items()):
            continue
        for w, own, defaults, by_day in zip(pending, raw[::3], raw[1::3], raw[2::3], strict=True):
            surface = configs[w.surface]
            arm = surface.index.get(w.item_id)
            value = None if arm is None else _stored_value(own, defaults, arm, by_day)
            if arm is not None and value is not None:
                item = restored_item(value, surface, arm, w.features, w.propensity, w.segment, w.decided_at_ms)
                users[w.pseudonym].ledger.restore_item(surface, w.decision_id, w.item_id, item)
                restored += 1
        return restored
    raise RuntimeError("settled ledger entries kept changing during their fetch")
