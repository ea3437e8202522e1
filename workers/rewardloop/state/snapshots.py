"""The user-state snapshot format, and rebuilding a user's state from its snapshot and log.

A user's state is rebuilt exactly from Redis: the latest snapshot, then every feedback
event logged after the snapshot's log position, replayed through the same deterministic
``UserState.learn``. Snapshot format (versioned, never pickled)::

    b"RLUS" | u16 version | u32 header length | JSON header | policy state blobs

The JSON header holds the feedback-log position the snapshot covers (``last_id``), the
fingerprint of every surface configuration it was taken under (``known``), where each
surface's policy blob lies, the reward ledgers' entries except those stored beside the snapshot
(learned, their window closed by ``settled_at_ms``, written with it: ``state/settled.py``; before
2026-11-27 ``settled_until_ms``, the latest decision time of such entries), the burst
detector's recent action times and the user's RNG state (``rng``; absent before 2026-11: the RNG
starts from the seed). A surface whose configuration changed since (other catalogue,
hyper-parameters or reward rules) is rebuilt from the (retained) log instead. Version 1
snapshots (before reward fusion) are read as stale for every surface.

A policy-experiment variant's state (``user_state`` docstring) is stored like a surface's, under
its key, while the shard serves the variant (``policies`` and ``surfaces`` hold the key); one the
shard no longer serves is left out, and one the snapshot lacks starts empty and learns from the log
after the snapshot (it did not exist before it), so it is never rebuilt from the whole log.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping

from rewardloop.learning.bandits import Policy
from rewardloop.learning.experiments.policies import is_variant_key
from rewardloop.learning.rewards import BurstDetector
from rewardloop.learning.rewards.quality import DEFAULT_QUALITY, QualityConfig
from rewardloop.learning.surface import SurfaceConfig, longest_window_ms
from rewardloop.state.records import FeedbackRecord, stream_id_key
from rewardloop.state.user_state import UserState, new_user_state

SNAPSHOT_MAGIC = b"RLUS"
SNAPSHOT_VERSION = 2
_PREAMBLE = struct.Struct("<4sHI")


def encode_snapshot(state: UserState, policies: Mapping[str, Policy], surfaces: Mapping[str, SurfaceConfig]) -> bytes:
    state.forget_unserved(policies)
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
            "ledgers": state.ledger.to_json(surfaces),
            "settled_at_ms": state.ledger.settled_at_ms,
            "bursts": state.bursts.to_lists(),
            "epochs": dict(sorted(state.epochs.items())),
            "last_positive_ms": state.activity.last_positive_ms,
            "rng": state.rng.bit_generator.state,
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
            state.ledger.restore(name, ledgers[name], surface)
        if name in epochs:
            state.epochs[name] = int(epochs[name])
    if "settled_at_ms" in header:
        state.ledger.settled_at_ms = int(header["settled_at_ms"])
    elif header.get("settled_until_ms"):  # stored apart: learned entries of decisions made up to then
        state.ledger.settled_at_ms = int(header["settled_until_ms"]) + longest_window_ms(surfaces.values())
    state.bursts = BurstDetector.from_lists(header.get("bursts", {}), quality)
    state.activity.last_positive_ms = int(header.get("last_positive_ms", state.activity.last_positive_ms))
    rng = header.get("rng")
    if rng is not None:
        state.restore_rng(rng)  # an evicted user decides on as if never evicted
    state.last_id = header["last_id"]
    # A variant's state the snapshot lacks (or holds under another fingerprint) starts anew (docstring).
    state.stale = frozenset(name for name in stale if not is_variant_key(name))
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
        if key > covered or r.state_key in state.stale:
            state.learn(policies, surfaces, r)
        if key > last:
            last, state.last_id = key, r.stream_id
    if state.stale:
        state.stale = frozenset()
        state.dirty = True


def replay_start(state: UserState) -> str:
    """First feedback-log id `replay` needs, as an XRANGE start."""
    return "-" if state.stale else f"({state.last_id}"
