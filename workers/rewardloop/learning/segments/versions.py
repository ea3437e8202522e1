"""Versions of a surface's segments: stable segment ids across refits, how segments moved, and bytes.

A refit may find the same segments in another order, one more, or one fewer. ``next_version`` keeps
a segment's id when the new fit has a segment close to it (matched by
``scipy.optimize.linear_sum_assignment`` on the distance between their means, in units of the
rates' spread) and gives new ids to the others, so that what names a segment to people (the admin
API, experiment targeting) keeps naming the same users' taste.

A version also carries the finer mixture that users' priors are served from (``prior_mixture``:
``model.PRIOR_COMPONENTS`` segments, not chosen by cross-validation). The segments are what people see and
target; the mixture is what serves, because more segments serve newcomers better than fewer that
explain held-out plays as well (bench/README.md, "Priors from a finer mixture").

A version is stored as immutable bytes (``encode``/``decode``: fixed order, little-endian, CRC32),
so a restarted shard serves exactly the memberships it served before. Format 1 (before the mixture)
still decodes; its segments serve.

>>> import numpy as np
>>> means = np.array([[0.1, 0.4], [0.4, 0.1]])
>>> old = next_version(None, SegmentModel(means, np.ones((2, 2)), np.full(2, 10.0), np.full(2, 0.5)), 7)
>>> old.ids, old.version
((0, 1), 1)
>>> swapped = SegmentModel(means[::-1], np.ones((2, 2)), np.full(2, 10.0), np.full(2, 0.5))
>>> new = next_version(old, swapped, 8)
>>> new.ids, new.version, decode(encode(new)).ids
((1, 0), 2, (1, 0))
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from rewardloop.learning.segments.model import SegmentModel

FloatArray = NDArray[np.float64]

MAGIC = b"RLSG"
FORMAT_VERSION = 2
HEAD = "<4sHQQQII"  # magic, format, version, created_ms, next_id, k, arms
SAME_SEGMENT = 1.0
"""Largest mean distance (in units of the rates' spread, per arm, root mean square) at which a new
segment keeps an old one's id."""


@dataclass(frozen=True, eq=False)
class SegmentVersion:
    version: int
    created_ms: int
    ids: tuple[int, ...]
    """Stable id of each of the model's segments, in its order."""
    next_id: int
    """The id the next new segment gets: ids are never reused."""
    model: SegmentModel
    mixture: SegmentModel | None = None
    """The finer mixture priors are served from; None: the segments serve (format 1)."""

    @property
    def prior_mixture(self) -> SegmentModel:
        """What a user's prior is the membership-weighted mix of."""
        return self.model if self.mixture is None else self.mixture

    def index_of(self, segment_id: int) -> int | None:
        return self.ids.index(segment_id) if segment_id in self.ids else None

    def population_means(self) -> FloatArray:
        """Per arm: the mean over segments, weighted by their plays."""
        plays = self.model.plays + 1e-9
        return np.asarray((plays * self.model.means).sum(axis=0) / plays.sum(axis=0), dtype=np.float64)

    def moved(self, previous: SegmentVersion | None) -> list[float | None]:
        """Per segment: how far its means moved since ``previous`` (``distance``); None if it is new."""
        if previous is None:
            return [None] * len(self.ids)
        out: list[float | None] = []
        for s, segment_id in enumerate(self.ids):
            before = previous.index_of(segment_id)
            same_arms = previous.model.means.shape[1] == self.model.means.shape[1]
            out.append(
                None if before is None or not same_arms else distance(previous.model.means[before], self.model.means[s])
            )
        return out


def distance(a: FloatArray, b: FloatArray) -> float:
    """Root mean square over arms of the difference of two segments' means, in units of their spread."""
    spread = np.sqrt(np.clip((a + b) / 2 * (1 - (a + b) / 2), 1e-6, None))
    return float(np.sqrt(np.mean(((a - b) / spread) ** 2)))


def next_version(
    previous: SegmentVersion | None,
    model: SegmentModel,
    now_ms: int,
    mixture: SegmentModel | None = None,
    after: tuple[int, int] | None = None,
) -> SegmentVersion:
    """``model`` (and the ``mixture`` priors are served from) as the version after ``previous``:
    segments close to an old one keep its id.

    Without ``previous`` (none yet, or its bytes are unreadable), ``after`` is the (version number,
    next id) stored beside it, if any: numbers still move forward and ids are never reused, since a
    segment id names a taste group to the people and experiments that target it.

    >>> model = SegmentModel(np.full((2, 3), 0.2), np.ones((2, 3)), np.full(2, 10.0), np.full(2, 0.5))
    >>> fresh = next_version(None, model, 5, after=(7, 12))
    >>> fresh.version, fresh.ids, fresh.next_id
    (8, (12, 13), 14)
    """
    if previous is None or previous.model.means.shape[1] != model.means.shape[1]:
        last, first = (0, 0) if previous is None else (previous.version, previous.next_id)
        if previous is None and after is not None:
            last, first = after
        ids = tuple(range(first, first + model.k))
        return SegmentVersion(last + 1, now_ms, ids, first + model.k, model, mixture)
    cost = np.array([[distance(old, new) for old in previous.model.means] for new in model.means])
    rows, cols = linear_sum_assignment(cost)
    assigned = {int(r): previous.ids[int(c)] for r, c in zip(rows, cols, strict=True) if cost[r, c] <= SAME_SEGMENT}
    next_id = previous.next_id
    new_ids: list[int] = []
    for s in range(model.k):
        if s in assigned:
            new_ids.append(assigned[s])
        else:
            new_ids.append(next_id)
            next_id += 1
    return SegmentVersion(previous.version + 1, now_ms, tuple(new_ids), next_id, model, mixture)


def encode(version: SegmentVersion) -> bytes:
    """Head, segment ids, the segments' arrays, the mixture's size and arrays (none: 0), CRC32."""
    model, mixture = version.model, version.mixture
    k, arms = model.means.shape
    if k == 0 or (mixture is not None and mixture.k == 0):
        raise ValueError("segment model: no segments")
    if mixture is not None and mixture.means.shape[1] != arms:
        raise ValueError(f"segment model: the mixture has {mixture.means.shape[1]} arms, the segments {arms}")
    body = struct.pack(HEAD, MAGIC, FORMAT_VERSION, version.version, version.created_ms, version.next_id, k, arms)
    body += struct.pack(f"<{k}Q", *version.ids) + _arrays(model)
    body += struct.pack("<I", 0 if mixture is None else mixture.k) + (b"" if mixture is None else _arrays(mixture))
    return body + struct.pack("<I", zlib.crc32(body))


def decode(blob: bytes) -> SegmentVersion:
    """The version ``encode`` wrote (this format or 1); ValueError if ``blob`` is not one."""
    head = struct.calcsize(HEAD)
    if len(blob) < head + 4 or zlib.crc32(blob[:-4]) != struct.unpack("<I", blob[-4:])[0]:
        raise ValueError("segment model: truncated or corrupt")
    magic, fmt, number, created_ms, next_id, k, arms = struct.unpack(HEAD, blob[:head])
    if magic != MAGIC or fmt not in (1, FORMAT_VERSION):
        raise ValueError(f"segment model: unknown format {magic!r} v{fmt}")
    if k == 0:
        raise ValueError("segment model: no segments")
    segments_end = head + 8 * k + _size(k, arms)
    if fmt > 1 and len(blob) < segments_end + 8:
        raise ValueError("segment model: wrong length")
    mixture_k = struct.unpack("<I", blob[segments_end : segments_end + 4])[0] if fmt > 1 else 0
    if len(blob) != segments_end + (4 + _size(mixture_k, arms) if fmt > 1 else 0) + 4:
        raise ValueError("segment model: wrong length")
    ids = struct.unpack(f"<{k}Q", blob[head : head + 8 * k])
    model = _model(blob, head + 8 * k, k, arms)
    mixture = _model(blob, segments_end + 4, mixture_k, arms) if mixture_k else None
    return SegmentVersion(number, created_ms, tuple(ids), next_id, model, mixture)


def _arrays(model: SegmentModel) -> bytes:
    arrays = (model.means, model.plays, model.strengths, model.weights)
    return b"".join(np.ascontiguousarray(a, dtype="<f8").tobytes() for a in arrays)


def _size(k: int, arms: int) -> int:
    """Bytes of ``_arrays`` of a model of ``k`` segments over ``arms``."""
    return 8 * (2 * k * arms + 2 * k)


def _model(blob: bytes, offset: int, k: int, arms: int) -> SegmentModel:
    values = np.frombuffer(blob, dtype="<f8", count=2 * k * arms + 2 * k, offset=offset).astype(np.float64)
    means, plays = values[: k * arms].reshape(k, arms), values[k * arms : 2 * k * arms].reshape(k, arms)
    return SegmentModel(means, plays, values[2 * k * arms : 2 * k * arms + k], values[2 * k * arms + k :])
