"""A policy's learned state and its bytes: ``PolicyState``, the RLPS codec and the count checks.

Everything a policy learns lives in a :class:`PolicyState` the caller owns, so one policy object
serves every user of a surface and states travel through Redis as bytes. These bytes are stored
(snapshots, priors): the format below must not change without a new version.

State bytes (little-endian, never pickled; the same state always gives the same bytes)::

    b"RLPS" | u16 format version | u8 len + algorithm name | u32 n_arms | u64 n_updates
    | u16 array count | arrays sorted by name | u32 CRC-32 of everything before it
    array: u8 len + name | u8 len + dtype (numpy ``dtype.str``, e.g. "<f8") | u8 ndim
           | u64 per dimension | raw C-order bytes

>>> import numpy as np
>>> from rewardloop.learning.bandits import UCB1, make_policy
>>> policy = make_policy(UCB1(), n_arms=3)
>>> state = policy.new_state()
>>> policy.update(state, arm=1, reward=0.5)
>>> blob = policy.dump_state(state)
>>> blob[:4], len(blob)
(b'RLPS', 122)
>>> policy.load_state(blob) == state
True
>>> policy.load_state(blob[:-1])
Traceback (most recent call last):
...
ValueError: corrupt ucb1 policy state: checksum mismatch (truncated or damaged)
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

MAGIC = b"RLPS"
FORMAT_VERSION = 1

# Relative rounding allowed when checking 0 <= reward_sums <= counts of a loaded state.
SUM_TOLERANCE = 1e-9


@dataclasses.dataclass(eq=False)
class PolicyState:
    """Learned state: named numpy arrays plus the number of updates applied.

    Mutable (``Policy.update`` changes it in place); ``==`` compares bit for bit.
    """

    arrays: dict[str, npt.NDArray[Any]]
    n_updates: int = 0

    def copy(self) -> PolicyState:
        return PolicyState({name: a.copy() for name, a in self.arrays.items()}, self.n_updates)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PolicyState):
            return NotImplemented
        return (
            self.n_updates == other.n_updates
            and self.arrays.keys() == other.arrays.keys()
            and all(_identical(a, other.arrays[name]) for name, a in self.arrays.items())
        )


def _identical(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def encode_state(algorithm: str, n_arms: int, state: PolicyState) -> bytes:
    """``state`` of ``algorithm`` over ``n_arms`` arms as versioned bytes (format above)."""
    name = algorithm.encode()
    parts = [
        struct.pack("<4sHB", MAGIC, FORMAT_VERSION, len(name)),
        name,
        struct.pack("<IQH", n_arms, state.n_updates, len(state.arrays)),
    ]
    for array_name in sorted(state.arrays):
        array = np.ascontiguousarray(state.arrays[array_name])
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        dtype = array.dtype.str.encode()
        parts += [struct.pack("<B", len(array_name)), array_name.encode(), struct.pack("<B", len(dtype)), dtype]
        parts += [struct.pack(f"<B{array.ndim}Q", array.ndim, *array.shape), array.tobytes()]
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


def decode_state(blob: bytes, algorithm: str, n_arms: int, template: Mapping[str, npt.NDArray[Any]]) -> PolicyState:
    """The state ``encode_state`` wrote for ``algorithm`` and ``n_arms``, its arrays shaped like ``template``.

    ValueError for anything else: another format, algorithm or size, a damaged or truncated blob.
    """
    reader = _Reader(bytes(blob), f"corrupt {algorithm} policy state")
    magic, version, name_length = reader.unpack("<4sHB")
    if magic != MAGIC:
        raise ValueError(f"not a policy state: magic {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise ValueError(f"unsupported policy state format version {version}, expected {FORMAT_VERSION}")
    reader.check_crc()
    stored_algorithm = reader.take(name_length).decode(errors="replace")
    if stored_algorithm != algorithm:
        raise ValueError(f"policy state is for algorithm {stored_algorithm!r}, this policy is {algorithm!r}")
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

    def expect_end(self) -> None:
        if self.position != len(self.blob):
            raise ValueError(f"{self.error}: {len(self.blob) - self.position} unexpected trailing bytes")
