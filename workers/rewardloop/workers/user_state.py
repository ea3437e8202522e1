"""One user's learned state across surfaces, its snapshot format, and log replay.

A user's state is rebuilt exactly from Redis: the latest snapshot, then every feedback
event logged after the snapshot's log position, replayed through the same deterministic
``Policy.update``. Snapshot format (versioned, never pickled)::

    b"RLUS" | u16 version | u32 header length | JSON header | policy state blobs

The JSON header holds the feedback-log position the snapshot covers (``last_id``), the
fingerprint of every surface configuration it was taken under (``known``), and where
each surface's policy blob lies. A surface whose configuration changed since (other
catalogue or hyper-parameters) is rebuilt from the whole log instead.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from rewardloop.workers.config import SurfaceConfig
from rewardloop.workers.keys import user_seed
from rewardloop.workers.policies import Policy, PolicyState

SNAPSHOT_MAGIC = b"RLUS"
SNAPSHOT_VERSION = 1
_PREAMBLE = struct.Struct("<4sHI")
LOG_START = "0-0"


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """Redis stream ids ("<ms>-<seq>") as comparable tuples."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class LoggedReward:
    """One feedback-log entry, as far as learning is concerned."""

    stream_id: str
    surface: str
    item_id: str
    reward: float
    # The joined decision's feature vector as float64 bytes; empty when there is none.
    features: bytes = b""
    # Propensity of the item in its decision (0.0 when unknown).
    propensity: float = 0.0

    def context(self) -> npt.NDArray[np.float64] | None:
        return np.frombuffer(self.features, dtype="<f8") if self.features else None


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

    def learn(self, policies: Mapping[str, Policy], surfaces: Mapping[str, SurfaceConfig], r: LoggedReward) -> bool:
        """Apply one logged reward; False when it cannot train this surface's policy.

        It cannot when the surface or item is no longer configured, or when a contextual
        policy would need the decision's features and the event was never joined to its
        decision (such events stay in the log for analysis; they train nothing).
        """
        surface = surfaces.get(r.surface)
        arm = surface.index.get(r.item_id) if surface else None
        if surface is None or arm is None:
            return False
        policy = policies[r.surface]
        context = r.context()
        if policy.contextual and (context is None or context.shape != (surface.context_dim,)):
            return False
        policy.update(self.policies[r.surface], arm, r.reward, context=context, propensity=r.propensity or None)
        return True


def new_user_state(pseudonym: str, policies: Mapping[str, Policy], seed: int) -> UserState:
    return UserState(
        pseudonym=pseudonym,
        policies={name: policy.new_state() for name, policy in policies.items()},
        rng=np.random.default_rng([seed, user_seed(pseudonym)]),
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
) -> UserState:
    """State as of the snapshot; `state.stale` names surfaces that need the whole log."""
    state = new_user_state(pseudonym, policies, seed)
    if blob is None:
        return state
    magic, version, header_len = _PREAMBLE.unpack_from(blob)
    if magic != SNAPSHOT_MAGIC or version != SNAPSHOT_VERSION:
        raise ValueError(f"not a user snapshot of version {SNAPSHOT_VERSION}: magic={magic!r} version={version}")
    body_start = _PREAMBLE.size + header_len
    header = json.loads(blob[_PREAMBLE.size : body_start])
    stale = set()
    for name, surface in surfaces.items():
        if header["known"].get(name) != surface.fingerprint:
            stale.add(name)
            continue
        if name in header["states"]:
            offset, length = header["states"][name]
            start = body_start + offset
            state.policies[name] = policies[name].load_state(blob[start : start + length])
    state.last_id = header["last_id"]
    state.stale = frozenset(stale)
    return state


def replay(
    state: UserState,
    rewards: Iterable[LoggedReward],
    policies: Mapping[str, Policy],
    surfaces: Mapping[str, SurfaceConfig],
) -> None:
    """Apply logged rewards the snapshot does not cover (all of them for stale surfaces)."""
    covered = stream_id_key(state.last_id)
    last = covered
    for r in rewards:
        key = stream_id_key(r.stream_id)
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
