"""A shard's side of learned segments: its sample of the users, and the priors the segments give.

**The sample.** Segments are fitted (``workers/segments.py``) from a sample of each surface's users:
every shard publishes, per surface, the evidence (per arm: plays and reward sums, ``encode_evidence``)
of the users it owns whose hash falls under a threshold, to its own Redis hash
(``keys.segment_sample_key``: one writer per key). The threshold halves whenever the sample would
pass ``SAMPLE_USERS``, dropping the users above it, so the sample stays uniform over users and
bounded (``SAMPLE_USERS`` x at most ``SAMPLE_ARMS`` arms each, ~600 bytes a user). A user's entry is
rewritten at most once a refresh, after their state changed, and dropped once it is older than the
users' retention. Keys hold pseudonyms only.

**The priors.** Every refresh reads the version number of each surface's model
(``keys.segment_model_key``) and loads the model when it changed. A user's prior is then
``SegmentModel.prior`` of their membership, which is the posterior over segments given the user's
own (decayed) evidence, over the finer mixture fitted beside the segments
(``SegmentVersion.prior_mixture``): a pure function of the user's state and the model's bytes, so a
restarted shard serves exactly what it served before. The membership is cached on the user, keyed
by the model's version and the user's update count.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from rewardloop.learning.bandits import Policy, PolicyState, make_policy
from rewardloop.learning.segments import SegmentModel
from rewardloop.learning.segments.versions import SegmentVersion, decode
from rewardloop.learning.surface import DEFAULT_STRENGTH, SurfaceConfig
from rewardloop.state import keys

log = logging.getLogger(__name__)

SAMPLE_USERS = 2000
"""Most users a shard keeps in its sample of one surface."""
SAMPLE_ARMS = 64
"""Most arms of one user's evidence in the sample (their most played)."""
LINEAR_SAMPLE_BYTES = 4 << 20
"""Bytes of one shard's sample of one linear surface (``linear_sample_users``)."""
MIN_LINEAR_SAMPLE = 100
THRESHOLD_FIELD = "#threshold"
FULL_THRESHOLD = 1 << 64
MODEL_FIELD, VERSION_FIELD, PREVIOUS_FIELD, NEXT_ID_FIELD = "current", "version", "previous", "next_id"
STRENGTH_FIELD, USERS_FIELD, CREATED_FIELD = "strength", "users", "created_ms"
SURE = 0.999
"""A membership this sure of one segment is served that segment's prior (built once per version)."""


def uses_segments(surface: SurfaceConfig, policy: Policy[Any]) -> bool:
    """Learned segments serve the surface: enabled, and a count-based policy that takes a prior."""
    if not surface.cold_start.learns_segments(surface.policy_config.name):
        return False
    if not getattr(policy, "supports_prior", False) or policy.contextual:
        return False
    arrays = policy.new_state().arrays
    return set(arrays) == {"counts", "reward_sums"}


def learns_linear_strength(surface: SurfaceConfig, policy: Policy[Any]) -> bool:
    """A per-arm ridge policy (linucb, lin_ts, discounted_linucb) whose prior strength is not configured:
    it is estimated from a sample of the users (``learning.segments.linear_prior``)."""
    if surface.cold_start.strength is not None or not policy.contextual:
        return False
    if not getattr(policy, "supports_prior", False):
        return False
    return set(policy.new_state().arrays) == {"counts", "gram", "xr"}


def segment_surfaces(surfaces: Mapping[str, SurfaceConfig]) -> dict[str, SurfaceConfig]:
    """The surfaces that learn segments: ``uses_segments`` of a surface that takes a prior at all."""
    return {name: s for name, s in surfaces.items() if s.cold_start.takes_prior and uses_segments(s, _policy(s))}


def linear_surfaces(surfaces: Mapping[str, SurfaceConfig]) -> dict[str, SurfaceConfig]:
    """The surfaces whose linear prior's strength is learned (``learns_linear_strength``)."""
    return {name: s for name, s in surfaces.items() if learns_linear_strength(s, _policy(s))}


def _policy(surface: SurfaceConfig) -> Policy[Any]:
    return make_policy(surface.policy_config, len(surface.items), surface.context_dim, surface.item_feature_matrix())


def sample_hash(pseudonym: str) -> int:
    """Where a user falls in the sample order: hex digits the shard routing does not use."""
    return int(pseudonym[8:24], 16)


def encode_evidence(counts: np.ndarray, sums: np.ndarray, updated_ms: int) -> bytes:
    """``<Q updated_ms><H m>``, then the ``m`` most played arms (u32), their plays and sums (f32)."""
    played = _most_played(counts)
    m = len(played)
    return (
        struct.pack("<QH", updated_ms, m)
        + played.astype("<u4").tobytes()
        + counts[played].astype("<f4").tobytes()
        + np.minimum(sums[played], counts[played]).astype("<f4").tobytes()
    )


def decode_evidence(blob: bytes, n_arms: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(updated_ms, arms, plays, sums) of an ``encode_evidence`` entry; ValueError if malformed."""
    if len(blob) < 10:
        raise ValueError("segment sample: truncated entry")
    updated_ms, m = struct.unpack("<QH", blob[:10])
    if len(blob) != 10 + 12 * m:
        raise ValueError("segment sample: wrong length")
    arms = np.frombuffer(blob, "<u4", m, 10).astype(np.intp)
    if m and int(arms.max()) >= n_arms:
        raise ValueError("segment sample: arm out of range")
    plays = np.frombuffer(blob, "<f4", m, 10 + 4 * m).astype(np.float64)
    sums = np.frombuffer(blob, "<f4", m, 10 + 8 * m).astype(np.float64)
    return updated_ms, arms, plays, sums


def linear_sample_users(n_arms: int, dim: int) -> int:
    """Most users in a shard's sample of a linear surface: as many entries as ``LINEAR_SAMPLE_BYTES``
    holds at their largest, at least ``MIN_LINEAR_SAMPLE`` and at most ``SAMPLE_USERS``."""
    largest = 12 + min(n_arms, SAMPLE_ARMS) * (8 + 8 * (dim * (dim + 1) // 2 + dim))
    return max(MIN_LINEAR_SAMPLE, min(SAMPLE_USERS, LINEAR_SAMPLE_BYTES // largest))


def encode_linear(counts: np.ndarray, gram: np.ndarray, xr: np.ndarray, updated_ms: int) -> bytes:
    """``<Q updated_ms><H m><H d>``, then the ``m`` most played arms (u32), their plays (f32), the upper
    triangles of their Gram matrices and their ``xr`` (f64: a rank-deficient Gram matrix must stay one)."""
    played = _most_played(counts)
    m, d = len(played), gram.shape[-1]
    upper = np.triu_indices(d)
    return (
        struct.pack("<QHH", updated_ms, m, d)
        + played.astype("<u4").tobytes()
        + counts[played].astype("<f4").tobytes()
        + gram[played][:, upper[0], upper[1]].astype("<f8").tobytes()
        + xr[played].astype("<f8").tobytes()
    )


def decode_linear(blob: bytes, n_arms: int, dim: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(updated_ms, arms, grams (m, d, d), xrs (m, d)) of an ``encode_linear`` entry; ValueError if malformed."""
    if len(blob) < 12:
        raise ValueError("linear sample: truncated entry")
    updated_ms, m, d = struct.unpack("<QHH", blob[:12])
    t = d * (d + 1) // 2
    if d != dim or len(blob) != 12 + 8 * m + 8 * m * (t + d):
        raise ValueError("linear sample: wrong length or dimension")
    arms = np.frombuffer(blob, "<u4", m, 12).astype(np.intp)
    if m and int(arms.max()) >= n_arms:
        raise ValueError("linear sample: arm out of range")
    offset = 12 + 8 * m
    upper = np.frombuffer(blob, "<f8", m * t, offset).reshape(m, t)
    xrs = np.frombuffer(blob, "<f8", m * d, offset + 8 * m * t).astype(np.float64).reshape(m, d)
    grams = np.zeros((m, d, d))
    rows, cols = np.triu_indices(d)
    grams[:, rows, cols] = upper
    grams[:, cols, rows] = upper
    return updated_ms, arms, grams, xrs


def _most_played(counts: np.ndarray) -> np.ndarray:
    """The played arms, at most ``SAMPLE_ARMS`` of them (the most played), in arm order."""
    played = np.flatnonzero(counts > 0)
    if len(played) > SAMPLE_ARMS:
        played = played[np.argsort(-counts[played], kind="stable")[:SAMPLE_ARMS]]
        played.sort()
    return played


class Sample:
    """One shard's sample of one surface's users (module docstring)."""

    def __init__(self, limit: int = SAMPLE_USERS) -> None:
        self.limit = limit
        self.threshold = FULL_THRESHOLD
        self.members: dict[str, int] = {}  # pseudonym -> updated_ms of its published entry
        self.pending: dict[str, PolicyState] = {}  # changed since published
        self.dropped: set[str] = set()
        self.size = 0  # distinct users in members and pending

    def touched(self, pseudonym: str, state: PolicyState) -> None:
        """On every learned reward: O(1) unless the sample must shrink."""
        if sample_hash(pseudonym) < self.threshold:
            if pseudonym not in self.pending and pseudonym not in self.members:
                self.size += 1
            self.pending[pseudonym] = state
            if self.size > self.limit:
                self._halve()

    def _halve(self) -> None:
        while self.size > self.limit:
            self.threshold //= 2
            for group in (self.members, self.pending):
                for pseudonym in [p for p in group if sample_hash(p) >= self.threshold]:
                    del group[pseudonym]
                    self.dropped.add(pseudonym)
            self.recount()

    def recount(self) -> None:
        self.size = len(self.members.keys() | self.pending.keys())

    def forget(self, pseudonym: str) -> None:
        self.pending.pop(pseudonym, None)
        if self.members.pop(pseudonym, None) is not None:
            self.dropped.add(pseudonym)
        self.recount()

    def expire(self, before_ms: int) -> None:
        for pseudonym in [p for p, at in self.members.items() if at < before_ms]:
            del self.members[pseudonym]
            self.dropped.add(pseudonym)
        self.recount()

    def restore(self, stored: Mapping[bytes, bytes]) -> None:
        threshold = stored.get(THRESHOLD_FIELD.encode())
        self.threshold = FULL_THRESHOLD if threshold is None else int(threshold)
        for field, blob in stored.items():
            if field != THRESHOLD_FIELD.encode() and len(blob) >= 8:
                self.members[field.decode()] = struct.unpack("<Q", blob[:8])[0]
        self.recount()


class LearnedSegments:
    """Per surface that uses them: the shard's sample and the current segment version."""

    def __init__(
        self,
        surfaces: Mapping[str, SurfaceConfig],
        policies: Mapping[str, Policy[Any]],
        shard_index: int,
        user_state_seconds: int,
    ):
        self._surfaces = {n: s for n, s in surfaces.items() if uses_segments(s, policies[n])}
        self._linear = {n: s for n, s in surfaces.items() if learns_linear_strength(s, policies[n])}
        self._sampled = {**self._surfaces, **self._linear}
        self._policies = policies
        self._shard = shard_index
        self._retention_ms = user_state_seconds * 1000
        self.samples = {n: Sample() for n in self._surfaces}
        self.samples.update(
            {n: Sample(linear_sample_users(len(s.items), s.context_dim)) for n, s in self._linear.items()}
        )
        self.versions: dict[str, SegmentVersion] = {}
        self.linear_strengths: dict[str, tuple[int, float]] = {}
        """Linear surface -> (version, strength) of its learned prior strength."""
        self._sure: dict[str, list[tuple[PolicyState, np.ndarray]]] = {}

    @property
    def surfaces(self) -> tuple[str, ...]:
        return tuple(self._surfaces)

    def stats(self) -> dict[str, float]:
        """Users in the samples (all surfaces), and the newest model version served."""
        return {
            "segment_sample_users": sum(s.size for s in self.samples.values()),
            "segment_version": max((v.version for v in self.versions.values()), default=0),
        }

    def touched(self, surface: str, pseudonym: str, state: PolicyState) -> None:
        """The user's state of ``surface`` changed: publish it with the next refresh if sampled."""
        sample = self.samples.get(surface)
        if sample is not None:
            sample.touched(pseudonym, state)

    def forget(self, pseudonym: str) -> None:
        """Drop the user from every sample (erasure)."""
        for sample in self.samples.values():
            sample.forget(pseudonym)

    def membership(self, surface: str, state: PolicyState) -> np.ndarray:
        """The posterior over the current version's segments of a user whose decision state is ``state``."""
        model = self.versions[surface].model
        return model.membership(state.arrays["counts"], state.arrays["reward_sums"])

    def mixture_membership(self, surface: str, state: PolicyState) -> np.ndarray:
        """The same over the mixture the current version's priors are served from (``prior``'s input)."""
        model = self.versions[surface].prior_mixture
        return model.membership(state.arrays["counts"], state.arrays["reward_sums"])

    def describe(self, surface: str, state: PolicyState, strength: float | None) -> dict[str, Any]:
        """A user's membership for the admin API: the version, segment ids and probabilities (largest
        first), the prior's strength (``strength`` if configured), the user's plays."""
        version = self.versions.get(surface)
        plays = float(state.arrays["counts"].sum())
        if surface in self._linear:  # no segments: the population prior's learned strength
            number, learned = self.linear_strengths.get(surface, (0, DEFAULT_STRENGTH))
            return {"version": number, "memberships": [], "prior_strength": learned, "interactions": plays}
        if version is None:
            return {"version": 0, "memberships": [], "prior_strength": 0.0, "interactions": plays}
        membership = self.membership(surface, state)
        order = np.argsort(-membership, kind="stable")
        mixture = self.mixture_membership(surface, state)
        estimated = float(mixture @ version.prior_mixture.strengths)  # what ``prior`` serves on every arm
        return {
            "version": version.version,
            "memberships": [(version.ids[s], float(membership[s])) for s in order],
            "prior_strength": estimated if strength is None else strength,
            "interactions": plays,
        }

    def prior(self, surface: str, membership: np.ndarray) -> tuple[PolicyState, np.ndarray]:
        """The prior state of a user with ``membership`` of the current version's prior mixture
        (``mixture_membership``), and its strength."""
        best = int(np.argmax(membership))
        if membership[best] >= SURE:
            return self._sure[surface][best]
        return _prior_state(self._policies[surface], self.versions[surface].prior_mixture, membership)

    def linear_strength(self, surface: str) -> float | None:
        """The learned prior strength of a linear surface; None before the first estimate."""
        learned = self.linear_strengths.get(surface)
        return None if learned is None else learned[1]

    async def restore(self, redis: aioredis.Redis) -> None:
        """Continue the samples this shard published; load the current models."""
        for name, surface in self._sampled.items():
            stored: Any = await redis.hgetall(keys.segment_sample_key(name, surface.fingerprint, self._shard))
            self.samples[name].restore(stored)
        await self.refresh(redis)

    async def refresh(self, redis: aioredis.Redis, now_ms: int | None = None) -> None:
        """Publish the changed entries of the samples, drop the old, load models of a new version."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        async with redis.pipeline(transaction=False) as pipe:
            for name, surface in self._surfaces.items():
                pipe.hget(keys.segment_model_key(name, surface.fingerprint), VERSION_FIELD)
            for name, surface in self._linear.items():
                pipe.hmget(keys.linear_prior_key(name, surface.fingerprint), VERSION_FIELD, STRENGTH_FIELD)
            replies = await pipe.execute()
            for name, surface in self._sampled.items():
                self._publish(pipe, name, surface, now_ms)
            await pipe.execute()
        versions = replies[: len(self._surfaces)]
        for name, (number, strength) in zip(self._linear, replies[len(self._surfaces) :], strict=True):
            if number is not None and strength is not None:
                self.linear_strengths[name] = (int(number), float(strength))
        changed = [
            name
            for name, number in zip(self._surfaces, versions, strict=True)
            if number is not None and (name not in self.versions or self.versions[name].version != int(number))
        ]
        for name in changed:
            surface = self._surfaces[name]
            blob: Any = await redis.hget(keys.segment_model_key(name, surface.fingerprint), MODEL_FIELD)
            if blob is not None:
                self._load(name, blob)

    def _publish(self, pipe: Any, name: str, surface: SurfaceConfig, now_ms: int) -> None:
        sample = self.samples[name]
        sample.expire(now_ms - self._retention_ms)
        key = keys.segment_sample_key(name, surface.fingerprint, self._shard)
        pending, sample.pending = sample.pending, {}
        dropped, sample.dropped = sample.dropped - pending.keys(), set()
        if pending:
            entries: dict[str, bytes | str] = {THRESHOLD_FIELD: str(sample.threshold)}
            for pseudonym, state in pending.items():
                arrays = state.dense().arrays
                if name in self._linear:
                    entries[pseudonym] = encode_linear(arrays["counts"], arrays["gram"], arrays["xr"], now_ms)
                else:
                    entries[pseudonym] = encode_evidence(arrays["counts"], arrays["reward_sums"], now_ms)
                sample.members[pseudonym] = now_ms
            pipe.hset(key, mapping=entries)
        if dropped:
            pipe.hdel(key, *dropped)
            pipe.hset(key, THRESHOLD_FIELD, str(sample.threshold))

    def _load(self, name: str, blob: bytes) -> None:
        try:
            version = decode(blob)
        except ValueError as exc:
            log.warning("shard %d: ignoring the segment model of %s: %s", self._shard, name, exc)
            return
        if version.model.means.shape[1] != len(self._surfaces[name].items):
            log.warning("shard %d: the segment model of %s has another catalogue", self._shard, name)
            return
        policy = self._policies[name]
        self.versions[name] = version
        mixture = version.prior_mixture
        self._sure[name] = [_prior_state(policy, mixture, np.eye(mixture.k)[s]) for s in range(mixture.k)]


def _prior_state(policy: Policy[Any], model: SegmentModel, membership: np.ndarray) -> tuple[PolicyState, np.ndarray]:
    plays, sums, strength = model.prior(membership)
    state = policy.new_state()
    state.arrays["counts"][:], state.arrays["reward_sums"][:] = plays, sums
    state.n_updates = 1
    return state, strength
