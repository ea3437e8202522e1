"""Policy states at rest: only the arm rows a new state lacks, in memory and in bytes (issue 10).

A user touches a few arms of a large catalogue; at rest (``Policy.rest``) and in ``dump_state``
their state keeps those rows only. Whatever the algorithm, the packed form must give back the
very same arrays, so it decides exactly as the dense form for the same evidence and seed.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardloop.learning.bandits import ALGORITHMS, Policy, PolicyState
from rewardloop.learning.bandits.state import ArmRows
from tests.unit.test_policy_conformance import NAMES, build, context

BIG = 10_000


def play(policy: Policy, state: PolicyState, seed: int, steps: int, arms: int) -> None:
    """``steps`` seeded updates on the first ``arms`` arms, each drawn by the policy itself."""
    rng = np.random.default_rng(seed)
    for step in range(steps):
        x = context(seed * 1000 + step)
        [choice] = policy.select(state.dense(), np.arange(arms), 1, rng, context=x)
        reward = float(rng.choice([0.0, 1.0, rng.random()]))
        policy.update(state, choice.arm, reward, context=x, propensity=choice.propensity)


def decisions(policy: Policy, state: PolicyState, seed: int) -> list[tuple[int, float, float]]:
    rng = np.random.default_rng(seed)
    x = context(seed)
    picks = policy.select(state.dense(), np.arange(policy.n_arms), 3, rng, context=x)
    return [(c.arm, c.score, c.propensity) for c in picks]


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), steps=st.integers(0, 40), arms=st.integers(1, 60))
def test_at_rest_decides_as_dense(name: str, seed: int, steps: int, arms: int) -> None:
    policy = build(ALGORITHMS[name](), n_arms=60)
    dense = policy.new_state()
    play(policy, dense, seed, steps, arms)
    sparse = dense.copy()
    policy.rest(sparse)
    assert sparse.at_rest
    assert decisions(policy, sparse, seed) == decisions(policy, dense, seed)
    assert sparse.at_rest  # deciding reads a copy: the state stays packed
    assert policy.load_state(policy.dump_state(sparse)) == dense
    # Learning from rest unpacks it; the same update gives the same state.
    play(policy, sparse, seed + 1, 3, arms)
    play(policy, dense, seed + 1, 3, arms)
    assert sparse == dense and not sparse.at_rest


@pytest.mark.parametrize("name", NAMES)
def test_memory_and_bytes_grow_with_touched_arms_not_the_catalogue(name: str) -> None:
    policy = build(ALGORITHMS[name](), n_arms=BIG)
    state = policy.new_state()
    play(policy, state, seed=7, steps=20, arms=20)
    dense_bytes = state.nbytes()
    policy.rest(state)
    rows = policy.arm_rows
    whole = sum(state.dense().arrays[n].nbytes for n in rows.whole)
    row = sum(state.dense().arrays[n][0].nbytes for n in rows.per_arm)
    assert state.nbytes() <= 20 * (4 + row) + whole < dense_bytes / 20
    assert len(policy.dump_state(state)) <= state.nbytes() + 64


def test_pack_keeps_every_bit_of_a_row() -> None:
    fresh = {"a": np.zeros(4), "b": np.zeros((4, 2)), "w": np.zeros(3)}
    rows = ArmRows(fresh, frozenset({"w"}), n_arms=4)
    arrays = {"a": np.array([0.0, -0.0, np.nan, 0.0]), "b": np.zeros((4, 2)), "w": np.array([1.0, 2.0, 3.0])}
    arrays["b"][3, 1] = 5e-324
    packed = rows.pack(arrays)
    assert len(packed) == 3 * (4 + 8 + 16) + 24  # arms 1, 2, 3 differ from fresh; w whole
    back = rows.unpack(packed)
    assert all(back[n].tobytes() == arrays[n].tobytes() for n in arrays)
    assert rows.unpack(rows.pack(fresh)).keys() == fresh.keys() and len(rows.pack(fresh)) == 24


def test_pack_refuses_what_it_cannot_have_written() -> None:
    rows = ArmRows({"a": np.zeros(4)}, frozenset(), n_arms=4)
    with pytest.raises(ValueError, match="no packed state"):
        rows.unpack(b"\0" * 5)
    with pytest.raises(ValueError, match="must increase"):
        rows.unpack(struct.pack("<2I2d", 2, 1, 1.0, 1.0))
    with pytest.raises(ValueError, match="below n_arms"):
        rows.unpack(struct.pack("<Id", 4, 1.0))
    with pytest.raises(ValueError, match="not per arm"):
        ArmRows({"a": np.zeros(3)}, frozenset(), n_arms=4)


def test_a_state_of_another_layout_is_refused() -> None:
    policy = build(ALGORITHMS["ucb1"]())
    blob = bytearray(policy.dump_state(policy.new_state()))
    name_end = 7 + len("ucb1")
    struct.pack_into("<I", blob, name_end + 12, policy.arm_rows.signature ^ 1)
    struct.pack_into("<I", blob, len(blob) - 4, zlib.crc32(bytes(blob[:-4])))
    with pytest.raises(ValueError, match="laid out for another version of ucb1"):
        policy.load_state(bytes(blob))


def _version_1(policy: Policy, state: PolicyState) -> bytes:
    """The documented version 1 bytes (every array whole), as snapshots before 2026-11 hold them."""
    name = policy.name.encode()
    parts = [struct.pack("<4sHB", b"RLPS", 1, len(name)), name]
    parts.append(struct.pack("<IQH", policy.n_arms, state.n_updates, len(state.arrays)))
    for array_name in sorted(state.arrays):
        array = state.arrays[array_name]
        dtype = array.dtype.str.encode()
        parts += [struct.pack("<B", len(array_name)), array_name.encode(), struct.pack("<B", len(dtype)), dtype]
        parts += [struct.pack(f"<B{array.ndim}Q", array.ndim, *array.shape), array.tobytes()]
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("name", NAMES)
def test_version_1_states_are_still_read(name: str) -> None:
    policy = build(ALGORITHMS[name]())
    state = policy.new_state()
    play(policy, state, seed=3, steps=25, arms=policy.n_arms)
    assert policy.load_state(_version_1(policy, state)) == state
