"""Cold-start priors: population -> segment -> user, aggregated across shards without a lock.

Every shard keeps, per surface, its *own contribution* to the population model (and to each
segment's): a policy state that has seen every live reward of the users this shard owns, built
with the very same ``Policy.update``. Each shard publishes its contribution under its own
Redis key (one writer per key, so no lock and no contention) and periodically reads the
others'; ``Policy.merge`` sums them into the population state. A user's effective model is
then ``combine(user, combine(segment, population, segment_strength), strength)``: a new user
is served from the population (or segment) at once, and their own evidence takes over as
it arrives.

Under time decay (``half_life_seconds``), a shard weighs each reward as the users' states do
(``rewards/decay.py``), relative to one epoch per surface that it publishes with its contribution
(field ``#epoch``); every contribution is brought to the present (scaled by ``1 / weight(now)``)
before the merge, so shards with different epochs add up, and the prior fades as the users do.

Priors are estimates, not records: a shard that crashes loses the contribution it had not
published yet (at most one refresh period), which only makes the prior slightly less
informed. Users' own states are exact regardless (see ``state/snapshots.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis

from rewardloop.learning.bandits import Policy, PolicyState
from rewardloop.learning.rewards.decay import decay_weight, epoch_for_update, present_factor
from rewardloop.learning.surface import SurfaceConfig
from rewardloop.state import keys
from rewardloop.state.keys import EPOCH_FIELD
from rewardloop.state.retention import Retention
from rewardloop.state.segment_priors import LearnedSegments

log = logging.getLogger(__name__)
POPULATION = ""  # segment key of the whole population
REFRESH_SECONDS = 1.0


def contribution_key(surface: SurfaceConfig, shard: int) -> str:
    """The surface's contribution hash of ``shard`` (``keys.contribution_key``)."""
    return keys.contribution_key(surface.name, surface.fingerprint, shard)


class Priors:
    def __init__(
        self,
        surfaces: Mapping[str, SurfaceConfig],
        policies: Mapping[str, Policy[Any]],
        shard_index: int,
        shards: int,
        user_state_seconds: int = Retention().user_state_seconds,
    ):
        self._surfaces = {n: s for n, s in surfaces.items() if _uses_prior(s, policies[n])}
        # Behaviour-based segments, where they serve (state/segment_priors.py).
        self.learned = LearnedSegments(self._surfaces, policies, shard_index, user_state_seconds)
        self._policies = policies
        self._shard = shard_index
        self._shards = shards
        self._own: dict[str, dict[str, PolicyState]] = {n: {} for n in self._surfaces}
        self._segment_priors: dict[str, dict[str, PolicyState]] = {n: {} for n in self._surfaces}
        self._dirty: set[str] = set()
        # Per decaying surface: the epoch (Unix ms) of this shard's contribution.
        self._epochs: dict[str, int] = {}

    @property
    def surfaces(self) -> tuple[str, ...]:
        return tuple(self._surfaces)

    def learn(
        self,
        surface: str,
        segment: str,
        arm: int,
        reward: float,
        features: npt.NDArray[np.float64] | None,
        propensity: float | None,
        at_ms: int = 0,
    ) -> None:
        """Count one live reward (observed at ``at_ms``) into this shard's population (and segment) contribution."""
        if surface not in self._surfaces:
            return
        policy = self._policies[surface]
        own = self._own[surface]
        weight = self._weight(surface, at_ms)
        for key in {POPULATION, segment}:
            state = own.get(key)
            if state is None:
                state = own[key] = policy.new_state()
            policy.update(state, arm, reward, context=features, propensity=propensity, weight=weight)
        self._dirty.add(surface)

    def _weight(self, surface: str, at_ms: int) -> float:
        """Decay weight of an observation at ``at_ms`` in this shard's contribution; rebases it first if needed."""
        half_life = self._surfaces[surface].reward.half_life_seconds
        if half_life is None:
            return 1.0
        epoch, factor = epoch_for_update(self._epochs.get(surface), at_ms, half_life)
        if factor is not None:
            policy = self._policies[surface]
            for state in self._own[surface].values():
                state.arrays = policy.scale(state, factor).arrays
        self._epochs[surface] = epoch
        return decay_weight(at_ms, half_life, epoch)

    def revise(
        self,
        surface: str,
        segment: str,
        arm: int,
        old: float,
        new: float,
        features: npt.NDArray[np.float64] | None,
        propensity: float | None,
        at_ms: int = 0,
    ) -> None:
        """Correct a reward ``learn`` counted (more feedback changed a decision's fused reward).

        As the latest update (``age`` 0): how long ago the population learned it is not tracked,
        which only matters to discounted policies, and there the correction is recent news.
        """
        if surface not in self._surfaces:
            return
        policy = self._policies[surface]
        weight = self._weight(surface, at_ms)
        for key in {POPULATION, segment}:
            state = self._own[surface].get(key)
            if state is not None and state.n_updates:
                policy.revise(state, arm, old, new, context=features, propensity=propensity, weight=weight)
        self._dirty.add(surface)

    def prior(
        self,
        surface: str,
        segment: str,
        own: PolicyState | None = None,
        memberships: dict[str, tuple[tuple[int, int], int, np.ndarray]] | None = None,
    ) -> tuple[PolicyState, float | np.ndarray] | None:
        """The prior a user of named ``segment`` starts from, and how strongly (per arm, for learned
        segments); None without one.

        Without a named segment, a user whose decision state is ``own`` is served from the learned
        segments that explain it, once there are some: their membership is cached in
        ``memberships`` (the user's), by model version and the user's update count. A linear surface
        without a configured strength is served at the one learned from its users
        (``learning.segments.linear_prior``), ``DEFAULT_STRENGTH`` before the first estimate.
        """
        surface_config = self._surfaces.get(surface)
        if surface_config is None:
            return None
        cold_start = surface_config.cold_start
        priors = self._segment_priors[surface]
        named = priors.get(segment) if segment else None
        if named is None and own is not None and surface in self.learned.versions:
            # A version is its number and creation time: a fitter that finds no model hash at all (Redis
            # lost it) numbers from 1 again, and a membership must never meet another model's mixture.
            current = self.learned.versions[surface]
            version = (current.version, current.created_ms)
            cached = memberships.get(surface) if memberships is not None else None
            if cached is None or cached[:2] != (version, own.n_updates):
                cached = (version, own.n_updates, self.learned.mixture_membership(surface, own))
                if memberships is not None:
                    memberships[surface] = cached
            state, strength = self.learned.prior(surface, cached[2])
            return state, strength if cold_start.strength is None else cold_start.strength
        base = named or priors.get(POPULATION)
        if base is None:
            return None
        learned = self.learned.linear_strength(surface) if cold_start.strength is None else None
        return base, cold_start.prior_strength if learned is None else learned

    async def restore(self, redis: aioredis.Redis) -> None:
        """Continue this shard's contribution (and segment samples) from what it last published."""
        await self.learned.restore(redis)
        for surface in self._surfaces:
            stored: Any = await redis.hgetall(contribution_key(self._surfaces[surface], self._shard))
            policy = self._policies[surface]
            epoch = _pop_epoch(stored)
            if epoch is not None:
                self._epochs[surface] = epoch
            for segment, blob in stored.items():
                try:
                    self._own[surface][segment.decode()] = policy.load_state(blob)
                except ValueError as exc:  # another configuration's statistics: start afresh
                    log.warning("shard %d: ignoring prior of %s: %s", self._shard, surface, exc)

    async def refresh(self, redis: aioredis.Redis) -> None:
        """Publish this shard's contribution, read the others', recompute the priors; publish the
        segment samples and load new segment models."""
        await self.learned.refresh(redis)
        # Learning goes on while the pipeline is in flight: decide what to publish (and so
        # how to read the replies) before awaiting, and let new learning mark surfaces anew.
        publishing = [surface for surface in self._surfaces if surface in self._dirty and self._own[surface]]
        self._dirty = set()
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for surface in self._surfaces:
                    policy = self._policies[surface]
                    if surface in publishing:
                        blobs: Any = {seg: policy.dump_state(state) for seg, state in self._own[surface].items()}
                        if surface in self._epochs:
                            blobs[EPOCH_FIELD] = str(self._epochs[surface])
                        pipe.hset(contribution_key(self._surfaces[surface], self._shard), mapping=blobs)
                    for shard in range(self._shards):
                        if shard != self._shard:
                            pipe.hgetall(contribution_key(self._surfaces[surface], shard))
                replies = iter(await pipe.execute())
        except BaseException:
            self._dirty.update(publishing)
            raise
        for surface in self._surfaces:
            if surface in publishing:
                next(replies)  # the HSET
            others = [next(replies) for shard in range(self._shards) if shard != self._shard]
            self._recompute(surface, others)

    def _recompute(self, surface: str, others: list[Any]) -> None:
        policy = self._policies[surface]
        half_life, now_ms = self._surfaces[surface].reward.half_life_seconds, int(time.time() * 1000)

        def present(state: PolicyState, epoch_ms: int | None) -> PolicyState:
            """The contribution as of now: each reward weighs ``2 ** -((now - t) / half_life)``."""
            factor = present_factor(epoch_ms, now_ms, half_life)
            return state if factor is None else policy.scale(state, factor)

        parts: dict[str, list[PolicyState]] = {}
        for segment, state in self._own[surface].items():
            parts.setdefault(segment, []).append(present(state, self._epochs.get(surface)))
        for stored in others:
            epoch = _pop_epoch(stored)
            for segment, blob in stored.items():
                try:
                    state = policy.load_state(blob)
                except ValueError:
                    continue  # published under another configuration
                parts.setdefault(segment.decode(), []).append(present(state, epoch))
        merged = {segment: policy.merge(states) for segment, states in parts.items()}
        population = merged.get(POPULATION)
        strength = self._surfaces[surface].cold_start.segment_strength
        priors: dict[str, PolicyState] = {}
        if population is not None:
            priors[POPULATION] = population
            for segment, state in merged.items():
                if segment != POPULATION:
                    priors[segment] = policy.combine(state, population, strength)
        self._segment_priors[surface] = priors


def _pop_epoch(stored: dict[bytes, bytes]) -> int | None:
    """Take the ``#epoch`` field out of a contribution hash read from Redis."""
    epoch = stored.pop(EPOCH_FIELD.encode(), None)
    return None if epoch is None else int(epoch)


def _uses_prior(surface: SurfaceConfig, policy: Policy[Any]) -> bool:
    return surface.cold_start.takes_prior and bool(getattr(policy, "supports_prior", False))
