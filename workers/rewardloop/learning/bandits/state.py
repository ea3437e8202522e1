"""A policy's learned state and its bytes: ``PolicyState``, the RLPS codec and the count checks.

Everything a policy learns lives in a :class:`PolicyState` the caller owns, so one policy object
serves every user of a surface and states travel through Redis as bytes. These bytes are stored
(snapshots, priors): the format below must not change without a new version.

State bytes (little-endian, never pickled; the same state always gives the same bytes)::

    b"RLPS" | u16 format version (2) | u8 len + algorithm name | u32 n_arms | u64 n_updates
    | u32 layout signature | the arrays packed as arm rows (``ArmRows``) | u32 CRC-32 of all before

The layout (which arrays, their dtypes and shapes, which are per arm) is the policy's and is not
repeated in the bytes; its signature (CRC-32 of its description) refuses a state written for
another layout. Version 1 (until 2026-11, still read) held every array whole::

    ... | u64 n_updates | u16 array count | arrays sorted by name | u32 CRC-32
    array: u8 len + name | u8 len + dtype (numpy ``dtype.str``, e.g. "<f8") | u8 ndim
           | u64 per dimension | raw C-order bytes

>>> import numpy as np
>>> from rewardloop.learning.bandits import UCB1, make_policy
>>> policy = make_policy(UCB1(), n_arms=3)
>>> state = policy.new_state()
>>> policy.update(state, arm=1, reward=0.5)
>>> blob = policy.dump_state(state)
>>> blob[:4], len(blob)
(b'RLPS', 51)
>>> policy.load_state(blob) == state
True
>>> policy.load_state(blob[:-1])
Traceback (most recent call last):
...
ValueError: corrupt ucb1 policy state: checksum mismatch (truncated or damaged)
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

MAGIC = b"RLPS"
FORMAT_VERSION = 2

# Relative rounding allowed when checking 0 <= reward_sums <= counts of a loaded state.
SUM_TOLERANCE = 1e-9


class PolicyState:
    """Learned state: named numpy arrays plus the number of updates applied.

    Mutable (``Policy.update`` changes it in place); ``==`` compares bit for bit.

    A state may be *at rest* (``Policy.rest``): then it holds only the arm rows that differ from a
    new state's, packed into one ``bytes`` (:class:`ArmRows`), so a user who touched a few arms of a
    10,000-arm catalogue costs a few hundred bytes, not 160 KB. Reading ``arrays`` unpacks it again
    (bit for bit) and keeps it unpacked until the next ``rest``; :meth:`dense` reads without that.
    """

    __slots__ = ("_arrays", "_packed", "_rows", "n_updates")

    def __init__(self, arrays: dict[str, npt.NDArray[Any]], n_updates: int = 0) -> None:
        self._arrays: dict[str, npt.NDArray[Any]] | None = arrays
        self._packed: bytes | None = None
        self._rows: ArmRows | None = None
        self.n_updates = n_updates

    @property
    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        if self._arrays is None:
            assert self._rows is not None and self._packed is not None
            self._arrays, self._packed = self._rows.unpack(self._packed), None
        return self._arrays

    @arrays.setter
    def arrays(self, arrays: dict[str, npt.NDArray[Any]]) -> None:
        self._arrays, self._packed = arrays, None

    @property
    def at_rest(self) -> bool:
        return self._arrays is None

    def rest(self, rows: ArmRows) -> None:
        """Keep only the packed arm rows (``rows`` is the policy's layout) until ``arrays`` is read."""
        if self._arrays is not None:
            self._packed, self._rows, self._arrays = rows.pack(self._arrays), rows, None

    def packed(self, rows: ArmRows) -> bytes:
        """The state's arm rows packed by ``rows`` (the policy's layout), at rest or not."""
        if self._arrays is None and self._rows == rows:
            assert self._packed is not None
            return self._packed
        return rows.pack(self.arrays)

    def dense(self) -> PolicyState:
        """The state with its arrays (itself when they are unpacked; else an unpacked copy, so a
        reader leaves a state at rest at rest)."""
        if self._arrays is not None:
            return self
        assert self._rows is not None and self._packed is not None
        return PolicyState(self._rows.unpack(self._packed), self.n_updates)

    def nbytes(self) -> int:
        """Bytes of its arrays, or of its packed rows when at rest (object headers excluded)."""
        if self._arrays is None:
            return len(self._packed or b"")
        return sum(a.nbytes for a in self._arrays.values())

    def copy(self) -> PolicyState:
        return PolicyState({name: a.copy() for name, a in self.arrays.items()}, self.n_updates)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PolicyState):
            return NotImplemented
        mine, theirs = self.dense().arrays, other.dense().arrays
        return (
            self.n_updates == other.n_updates
            and mine.keys() == theirs.keys()
            and all(_identical(a, theirs[name]) for name, a in mine.items())
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        form = f"{self.nbytes()} packed bytes" if self.at_rest else repr(self.arrays)
        return f"PolicyState({form}, n_updates={self.n_updates})"


def _identical(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


class ArmRows:
    """A policy's sparse layout: which arrays are per arm (first axis = arm) and what a new state holds.

    ``pack`` keeps the arms whose rows differ, in any per-arm array, from a new state's (bit for bit,
    so ``-0.0`` and ``NaN`` survive), and the other ("whole") arrays entire::

        u32 arm indices, increasing | per-arm arrays by name: their rows of those arms
        | whole arrays by name | (all little-endian, C order)

    ``unpack`` writes the rows back into a copy of the new state: the same arrays, bit for bit.
    """

    def __init__(self, fresh: Mapping[str, npt.NDArray[Any]], whole: frozenset[str], n_arms: int) -> None:
        self.n_arms = n_arms
        # What a new state holds, little-endian, by name.
        self.fresh = {name: _little(fresh[name]) for name in sorted(fresh)}
        self.per_arm = tuple(name for name in self.fresh if name not in whole)
        self.whole = tuple(name for name in self.fresh if name in whole)
        for name in self.per_arm:
            if self.fresh[name].ndim == 0 or self.fresh[name].shape[0] != n_arms:
                raise ValueError(f"array {name!r} is not per arm: shape {self.fresh[name].shape}, {n_arms} arms")
        self._row_bytes = sum(self.fresh[name][0].nbytes for name in self.per_arm)
        self._whole_bytes = sum(self.fresh[name].nbytes for name in self.whole)
        # The fresh rows as bytes per arm, to find the changed ones.
        self.fresh_rows = {name: _row_bytes(self.fresh[name], n_arms) for name in self.per_arm}
        described = ";".join(f"{n}:{a.dtype.str}:{list(a.shape)}:{n in whole}" for n, a in self.fresh.items())
        self.signature = zlib.crc32(described.encode())

    def pack(self, arrays: Mapping[str, npt.NDArray[Any]]) -> bytes:
        changed = np.zeros(self.n_arms, dtype=bool)
        for name in self.per_arm:
            rows = _row_bytes(_little(arrays[name]), self.n_arms)
            changed |= (rows != self.fresh_rows[name]).any(axis=1)
        arms = np.flatnonzero(changed)
        parts = [arms.astype("<u4").tobytes()]
        parts += [_little(arrays[name])[arms].tobytes() for name in self.per_arm]
        parts += [_little(arrays[name]).tobytes() for name in self.whole]
        return b"".join(parts)

    def unpack(self, packed: bytes) -> dict[str, npt.NDArray[Any]]:
        """The arrays ``pack`` packed; ValueError for bytes it cannot have written."""
        k, extra = divmod(len(packed) - self._whole_bytes, 4 + self._row_bytes)
        if k < 0 or extra or k > self.n_arms:
            raise ValueError(f"{len(packed)} bytes are no packed state of this layout")
        arms = np.frombuffer(packed, dtype="<u4", count=k).astype(np.intp)
        if k and (arms[-1] >= self.n_arms or np.any(np.diff(arms) <= 0)):
            raise ValueError("packed arm indices must increase and be below n_arms")
        arrays = {name: fresh.copy() for name, fresh in self.fresh.items()}
        position = 4 * k
        for name in self.per_arm:
            row = self.fresh[name][0]
            size = k * row.nbytes
            rows = np.frombuffer(packed, dtype=row.dtype, count=k * row.size, offset=position)
            arrays[name][arms] = rows.reshape((k, *row.shape))
            position += size
        for name in self.whole:
            fresh = self.fresh[name]
            arrays[name] = (
                np.frombuffer(packed, dtype=fresh.dtype, count=fresh.size, offset=position).reshape(fresh.shape).copy()
            )
            position += fresh.nbytes
        return arrays


def _little(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    array = np.ascontiguousarray(array)
    return array.astype(array.dtype.newbyteorder("<"), copy=False)


def _row_bytes(array: npt.NDArray[Any], n_arms: int) -> npt.NDArray[np.uint8]:
    """Each arm's row of ``array`` as raw bytes: one row of a uint8 matrix per arm."""
    return array.reshape(n_arms, -1).view(np.uint8)


def encode_state(algorithm: str, n_arms: int, state: PolicyState, rows: ArmRows) -> bytes:
    """``state`` of ``algorithm`` over ``n_arms`` arms as versioned bytes (format above), its arrays
    packed by ``rows``, the policy's layout."""
    name = algorithm.encode()
    head = struct.pack("<4sHB", MAGIC, FORMAT_VERSION, len(name)) + name
    body = head + struct.pack("<IQI", n_arms, state.n_updates, rows.signature) + state.packed(rows)
    return body + struct.pack("<I", zlib.crc32(body))


def decode_state(blob: bytes, algorithm: str, n_arms: int, rows: ArmRows) -> PolicyState:
    """The state ``encode_state`` wrote for ``algorithm`` and ``n_arms`` (or a version 1 state), its
    arrays laid out by ``rows``.

    ValueError for anything else: another format, algorithm, size or layout, a damaged or truncated blob.
    """
    reader = _Reader(bytes(blob), f"corrupt {algorithm} policy state")
    magic, version, name_length = reader.unpack("<4sHB")
    if magic != MAGIC:
        raise ValueError(f"not a policy state: magic {magic!r}, expected {MAGIC!r}")
    if version not in (1, FORMAT_VERSION):
        raise ValueError(f"unsupported policy state format version {version}, expected {FORMAT_VERSION}")
    reader.check_crc()
    stored_algorithm = reader.take(name_length).decode(errors="replace")
    if stored_algorithm != algorithm:
        raise ValueError(f"policy state is for algorithm {stored_algorithm!r}, this policy is {algorithm!r}")
    if version == 1:
        return _decode_dense(reader, n_arms, rows.fresh)
    stored_arms, n_updates, signature = reader.unpack("<IQI")
    if stored_arms != n_arms:
        raise ValueError(f"policy state has n_arms={stored_arms}, this policy has n_arms={n_arms}")
    if signature != rows.signature:
        raise ValueError(f"{reader.error}: its arrays are laid out for another version of {algorithm}")
    try:
        arrays = rows.unpack(reader.rest())
    except ValueError as exc:
        raise ValueError(f"{reader.error}: {exc}") from None
    return PolicyState(arrays, n_updates)


def _decode_dense(reader: _Reader, n_arms: int, template: Mapping[str, npt.NDArray[Any]]) -> PolicyState:
    """The rest of a version 1 state: every array whole, named, typed and shaped in the blob."""
    stored_arms, n_updates, n_arrays = reader.unpack("<IQH")
    if stored_arms != n_arms:
        raise ValueError(f"policy state has n_arms={stored_arms}, this policy has n_arms={n_arms}")
    arrays = {}
    for _ in range(n_arrays):
        name = reader.take(reader.unpack("<B")[0]).decode(errors="replace")
        dtype = reader.take(reader.unpack("<B")[0]).decode(errors="replace")
        shape = reader.unpack(f"<{reader.unpack('<B')[0]}Q")
        if name not in template or name in arrays:
            raise ValueError(f"{reader.error}: unexpected array {name!r}")
        expected = template[name]
        stored = expected.dtype.newbyteorder("<")
        if dtype != stored.str or shape != expected.shape:
            raise ValueError(f"{reader.error}: array {name!r} is {dtype}{list(shape)}")
        raw = reader.take(expected.nbytes)
        arrays[name] = np.frombuffer(raw, dtype=stored).reshape(shape).astype(expected.dtype)
    reader.expect_end()
    return PolicyState(arrays, n_updates)


def check_layout(
    algorithm: str, arrays: Mapping[str, npt.NDArray[Any]], layout: Mapping[str, tuple[np.dtype[Any], tuple[int, ...]]]
) -> None:
    """``arrays`` are exactly the arrays of ``layout`` (name -> dtype, shape): what the algorithm's state holds."""
    if arrays.keys() != layout.keys():
        raise ValueError(f"{algorithm} policy state must have arrays {sorted(layout)}, got {sorted(arrays)}")
    for name, (dtype, shape) in layout.items():
        array = arrays[name]
        if array.dtype != dtype or array.shape != shape:
            raise ValueError(
                f"{algorithm} policy state array {name!r} must be "
                f"{dtype}{list(shape)}, got {array.dtype}{list(array.shape)}"
            )


def check_counts(algorithm: str, state: PolicyState) -> None:
    """Per-arm ``counts`` >= 0 and 0 <= ``reward_sums`` <= ``counts``, finite (up to rounding)."""
    counts, sums = state.arrays["counts"], state.arrays["reward_sums"]
    if not (np.all(np.isfinite(counts)) and np.all(np.isfinite(sums))):
        raise ValueError(f"corrupt {algorithm} policy state: non-finite counts or reward sums")
    # Corrections (revise) and weights (decay) are float arithmetic: a sum brought back to 0
    # or up to its count may miss it in the last bits. Allow that, relative to the count.
    slack = SUM_TOLERANCE * (counts + 1.0)
    if np.any(counts < 0) or np.any(sums < -slack) or np.any(sums > counts + slack):
        raise ValueError(f"corrupt {algorithm} policy state: need 0 <= reward_sums <= counts")


def check_discounted_counts(algorithm: str, state: PolicyState, gamma: float) -> None:
    """``check_counts``, and the discounted total sum_k<n gamma^k <= min(n, 1 / (1 - gamma))."""
    check_counts(algorithm, state)
    total, bound = state.arrays["counts"].sum(), min(state.n_updates, 1.0 / (1.0 - gamma))
    if total > bound * (1.0 + 1e-9):
        raise ValueError(
            f"corrupt {algorithm} policy state: discounted counts sum to {total}, more than {bound}",
        )


class _Reader:
    """Cursor over a state blob; every shortfall is a ValueError naming the blob."""

    def __init__(self, blob: bytes, error: str) -> None:
        self.blob, self.error, self.position = blob, error, 0

    def take(self, size: int) -> bytes:
        end = self.position + size
        if end > len(self.blob):
            raise ValueError(f"{self.error}: truncated at byte {self.position} of {len(self.blob)}")
        chunk, self.position = self.blob[self.position : end], end
        return chunk

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def check_crc(self) -> None:
        body, trailer = self.blob[:-4], self.blob[-4:]
        if len(trailer) < 4 or struct.unpack("<I", trailer)[0] != zlib.crc32(body):
            raise ValueError(f"{self.error}: checksum mismatch (truncated or damaged)")
        self.blob = body

    def rest(self) -> bytes:
        return self.take(len(self.blob) - self.position)

    def expect_end(self) -> None:
        if self.position != len(self.blob):
            raise ValueError(f"{self.error}: {len(self.blob) - self.position} unexpected trailing bytes")
