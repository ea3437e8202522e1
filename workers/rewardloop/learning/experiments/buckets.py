"""Sticky allocation: a layer's users hash to `BUCKETS` buckets, and an experiment owns buckets per variant.

Every user of a layer falls in one bucket (a hash of the layer's salt and the user id: no storage,
the same answer on every replica). An experiment holds a set of the layer's buckets for each
variant; two experiments of one layer never hold the same bucket, so they never share a user.

Changes are monotone, so no assigned user is ever moved to another variant:
- raising coverage (a ramp) takes *free* buckets of the layer and gives them to the variants below
  their share;
- lowering coverage or a variant's weight *retires* buckets: their users leave the experiment (they
  see the default experience) and never come back to it, so they cannot come back in another
  variant; the experiment keeps holding them until it stops, so no other experiment of the layer
  picks them up while it runs.

Buckets are kept as sorted ``[start, end)`` ranges: a JSON-sized record however many there are.

>>> free = np.ones(BUCKETS, dtype=bool)
>>> a = resize(Allocation.empty(("control", "treatment")), {"control": 1, "treatment": 1}, 0.1, free)
>>> a.counts()
{'control': 500, 'treatment': 500}
>>> b = resize(a, {"control": 1, "treatment": 1}, 0.5, free)
>>> all(np.isin(a.buckets(v), b.buckets(v)).all() for v in ("control", "treatment"))
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

BUCKETS = 10_000

Ranges = tuple[tuple[int, int], ...]


def salt_key(salt: str) -> np.uint64:
    """A layer's salt as the 64-bit key its buckets are mixed with."""
    return np.uint64(int.from_bytes(hashlib.blake2b(salt.encode(), digest_size=8).digest(), "big"))


def user_key(user_id: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "big"))


def buckets_of(salts: np.ndarray, user_id: str) -> np.ndarray:
    """The user's bucket in each layer keyed ``salts`` (uint64): one BLAKE2b of the user id, then
    SplitMix64's finaliser of it XOR each layer's key (Steele, Lea & Flood 2014; a full-avalanche
    mixer, so the layers' buckets are independent). One hash per user, not per layer: 50 layers
    cost about what one does (bench/assign.py)."""
    z = salts ^ user_key(user_id)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(BUCKETS)).astype(np.int64)


def bucket_of(salt: str, user_id: str) -> int:
    """The user's bucket in the layer salted ``salt`` (64 mixed bits reduced: bias < 1e-15)."""
    return int(buckets_of(np.array([salt_key(salt)], dtype=np.uint64), user_id)[0])


def to_ranges(buckets: np.ndarray) -> Ranges:
    """Sorted bucket ids as ``[start, end)`` runs."""
    ids = np.unique(np.asarray(buckets, dtype=np.int64))
    if ids.size == 0:
        return ()
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    starts = ids[np.r_[0, breaks]]
    ends = ids[np.r_[breaks - 1, ids.size - 1]] + 1
    return tuple((int(s), int(e)) for s, e in zip(starts, ends, strict=True))


def from_ranges(ranges: Ranges) -> np.ndarray:
    if not ranges:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(s, e, dtype=np.int64) for s, e in ranges])


@dataclass(frozen=True)
class Allocation:
    """The buckets an experiment holds: per variant, and retired (held, enrolling nobody)."""

    variants: tuple[tuple[str, Ranges], ...]
    retired: Ranges = ()

    @classmethod
    def empty(cls, variants: Sequence[str]) -> Allocation:
        return cls(tuple((v, ()) for v in variants))

    def buckets(self, variant: str) -> np.ndarray:
        return from_ranges(dict(self.variants).get(variant, ()))

    def counts(self) -> dict[str, int]:
        return {v: sum(e - s for s, e in ranges) for v, ranges in self.variants}

    def enrolled(self) -> int:
        return sum(self.counts().values())

    def held(self) -> np.ndarray:
        """A mask of every bucket the experiment holds (its variants' and the retired ones)."""
        mask = np.zeros(BUCKETS, dtype=bool)
        for _, ranges in (*self.variants, ("", self.retired)):
            for s, e in ranges:
                mask[s:e] = True
        return mask

    def shares(self) -> dict[str, float]:
        """Each variant's share of the enrolled buckets: the split SRM is checked against."""
        counts = self.counts()
        total = sum(counts.values())
        return {v: (c / total if total else 0.0) for v, c in counts.items()}

    def to_dict(self) -> dict[str, object]:
        return {"variants": {v: [list(r) for r in ranges] for v, ranges in self.variants},
                "retired": [list(r) for r in self.retired]}  # fmt: skip

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> Allocation:
        variants = raw["variants"]
        retired = raw.get("retired", [])
        assert isinstance(variants, Mapping) and isinstance(retired, list)
        return cls(
            tuple((str(v), tuple((int(s), int(e)) for s, e in r)) for v, r in variants.items()),
            tuple((int(s), int(e)) for s, e in retired),
        )


def apportion(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """``total`` split by ``weights`` into integers (largest remainder; ties to the earlier name)."""
    whole = sum(weights.values())
    exact = {v: total * w / whole for v, w in weights.items()}
    out = {v: int(x) for v, x in exact.items()}
    left = total - sum(out.values())
    for v in sorted(exact, key=lambda k: out[k] - exact[k])[:left]:
        out[v] += 1
    return out


def resize(allocation: Allocation, weights: Mapping[str, float], coverage: float, free: np.ndarray) -> Allocation:
    """The allocation at ``coverage`` of the layer split by ``weights``, reached without moving a user.

    ``free``: the layer's buckets no other experiment holds (its own are never taken twice).
    Variants above their target retire their highest buckets; variants below take free buckets,
    lowest first. When the layer has too few free buckets for the split asked, the experiment
    shrinks to the largest size it can hold *at that split* (a full layer re-weighted from 1:1 to
    1:3 retires control users rather than run at 1:2): the split is what the statistics and the
    sample-ratio check assume. Variants in ``weights`` but not in the allocation are added; the
    allocation's others retire.
    """
    current = {v: from_ranges(r) for v, r in allocation.variants}
    for v in weights:
        current.setdefault(v, np.zeros(0, dtype=np.int64))
    shares = {v: weights.get(v, 0.0) for v in current}
    available = np.flatnonzero(free & ~allocation.held())

    def shortfall(total: int) -> int:
        target = apportion(total, shares)
        return sum(max(0, target[v] - current[v].size) for v in current) - available.size

    # The largest size not needing more than the free buckets (shortfall grows with the size).
    low, high = 0, round(coverage * BUCKETS)
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if shortfall(middle) <= 0 else (low, middle - 1)
    target = apportion(low, shares)
    retired = [from_ranges(allocation.retired)]
    taken = 0
    for v, ids in current.items():
        if ids.size > target[v]:
            retired.append(ids[target[v] :])
            current[v] = ids[: target[v]]
        elif ids.size < target[v]:
            count = target[v] - ids.size
            current[v] = np.concatenate([ids, available[taken : taken + count]])
            taken += count
    order = [v for v, _ in allocation.variants] + [v for v in weights if v not in dict(allocation.variants)]
    return Allocation(
        tuple((v, to_ranges(current[v])) for v in order),
        to_ranges(np.concatenate(retired)),
    )
