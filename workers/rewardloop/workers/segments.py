"""The segment fitter: the one writer of every surface's segment model.

Every ``service.segment_fit_seconds`` (sooner while a surface is young, ``refit_after``; longer if
fitting took more than ``MAX_DUTY`` of the time, ``rest``) it reads the shards' samples of each surface's users
(``state/segment_priors.py``), fits segments to them (``learning.segments.fit_segments``: the number
of segments chosen from the data, at most the surface's ``cold_start.max_segments``; and the finer
mixture that priors are served from, ``versions.SegmentVersion.prior_mixture``), keeps the ids of
the segments it found again (``versions.next_version``) and writes the new version to the surface's
model hash, the previous one beside it. Shards load a new version within their next prior refresh.
A fit runs only when the samples changed; fitting runs in a thread, so the actor still answers while
it fits, and at the lowest CPU priority (``_lower_priority``), so fits use what the serving path
leaves: at full priority, a fit's seconds of CPU every minute were the soak's periodic p99 spikes
(issue 10).
``SegmentFitter`` is plain asyncio, testable without Ray; ``workers.cluster`` hosts it as an actor
that Ray restarts after a crash (it resumes from the version in Redis: the models are the durable
state, fitting again is cheap).

Versions only move forward: the write is a transaction watching the model key, so a fitter that
lost a race (an old incarnation still finishing) does not overwrite a newer version.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError
from threadpoolctl import threadpool_limits

from rewardloop.learning.bandits.ridge import RidgeConfig
from rewardloop.learning.segments import fit_segments_and_mixture
from rewardloop.learning.segments.linear_prior import linear_strength
from rewardloop.learning.segments.versions import SegmentVersion, decode, encode, next_version
from rewardloop.learning.surface import MAX_SEGMENTS, SurfaceConfig
from rewardloop.state import keys, loops
from rewardloop.state.segment_priors import (
    CREATED_FIELD,
    MODEL_FIELD,
    NEXT_ID_FIELD,
    PREVIOUS_FIELD,
    STRENGTH_FIELD,
    THRESHOLD_FIELD,
    USERS_FIELD,
    VERSION_FIELD,
    decode_evidence,
    decode_linear,
    linear_surfaces,
    segment_surfaces,
)
from rewardloop.workers.config import ServiceConfig

log = logging.getLogger(__name__)

MAX_DUTY = 0.1
"""Share of a core the fitter may spend fitting (fits are seconds of CPU each, on a box that serves)."""
YOUNG_DUTY = 0.5
"""The same after a round that fitted a young surface (``refit_after``): its model changes fastest, for
a few minutes."""
FIRST_FIT_SECONDS = 2.0
"""How soon the fitter looks again while some surface has no model yet; after a surface's ``v``-th
version, ``FIRST_FIT_SECONDS * FIT_GROWTH ** v``, up to ``service.segment_fit_seconds`` (``refit_after``)."""
FIT_GROWTH = 1.1
"""How much longer each pause is than the one before, while a surface is young: under steady traffic
since the surface began, its sample has grown by a tenth since the last fit (by a quarter, 1.25,
the fitter fell behind a caller driving a new surface at speed: bench/README.md)."""
T = TypeVar("T")


def _lower_priority() -> None:
    """The fitting thread's initializer: Linux's SCHED_IDLE (per thread), else niceness 19. Niceness alone
    is not enough: the scheduler counts a core running a niced thread as busy and queues the serving
    path's wake-ups elsewhere, while an idle-class thread leaves its core to any of them (measured: at
    nice 19 a fit still took half a core and every fit still spiked the soak's p99)."""
    tid = threading.get_native_id()
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, tid, 19)
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))


def _single_threaded(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` with BLAS and OpenMP kept to this (idle-class) thread: their pools are not. Returns its
    result and the CPU seconds it took."""
    started = time.thread_time()
    with threadpool_limits(limits=1):
        result = fn()
    return result, time.thread_time() - started


def refit_after(every: float, version: int) -> float:
    """Seconds until a surface at model ``version`` (0: none yet) is looked at again.

    A young surface is refitted sooner: ``FIRST_FIT_SECONDS`` while it has no model, then ``FIT_GROWTH``
    times longer after each version, up to ``every`` (after ~29 versions at 30 s). Its sample is small
    and grows by half within seconds while its users start (a model of the first few seconds is soon a
    poor one), and a fit of it costs little: a caller that drove a new surface for a minute met one or
    two fits (bench/README.md, "Fits while a surface is young"). A restarted fitter continues from the
    versions in Redis, so a surface that has been fitted for a while waits ``every``.

    >>> refit_after(30.0, 0), round(refit_after(30.0, 3), 3), refit_after(30.0, 40), refit_after(1.0, 0)
    (2.0, 2.662, 30.0, 1.0)
    """
    return min(every, FIRST_FIT_SECONDS * FIT_GROWTH ** min(version, 64))


def rest(fit_cpu_seconds: float, young: bool) -> float:
    """Seconds the fitter rests after a round of fits that took ``fit_cpu_seconds`` of CPU: it spends at
    most ``MAX_DUTY`` of a core, ``YOUNG_DUTY`` if a surface it fitted is young (counted in CPU: an
    idle-class fit on a busy box takes longer, not more; the serving path keeps every core it wants).

    >>> rest(1.0, young=False), rest(1.0, young=True)
    (9.0, 1.0)
    """
    duty = YOUNG_DUTY if young else MAX_DUTY
    return fit_cpu_seconds * (1.0 - duty) / duty


class SegmentFitter:
    def __init__(self, config: ServiceConfig, redis_url: str):
        self.redis = aioredis.Redis.from_url(redis_url)
        self.shards = config.shards
        self.surfaces: dict[str, SurfaceConfig] = segment_surfaces(config.surfaces)
        self.linear: dict[str, SurfaceConfig] = linear_surfaces(config.surfaces)
        self.retention_ms = config.retention.user_state_seconds * 1000
        self._fitted: dict[str, bytes] = {}  # surface -> digest of the samples last fitted
        self._task: asyncio.Task[None] | None = None
        self.fits = 0
        self.every = float(config.segment_fit_seconds)
        self.last_fit_seconds = 0.0  # wall time of the last round of fits
        self._cpu_seconds = 0.0  # CPU of fits so far
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "segment-fit", initializer=_lower_priority)

    def start(self) -> None:
        if self._task is None and (self.surfaces or self.linear) and self.every > 0:
            self._task = loops.start(self._fit_forever())

    async def close(self) -> None:
        await loops.stop(self._task)  # a cancellation a Redis reply absorbs is repeated
        self._task = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        await self.redis.aclose()

    async def _in_background(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the low-priority fitting thread; its CPU time is counted."""
        result, cpu = await asyncio.get_running_loop().run_in_executor(self._pool, _single_threaded, fn)
        self._cpu_seconds += cpu
        return result

    async def _fit_forever(self) -> None:
        """Each surface on its own schedule (``refit_after``); the rounds at the fitter's duty (``rest``)."""
        due = dict.fromkeys((*self.surfaces, *self.linear), 0.0)  # monotonic time of each one's next look
        wait = min(self.every, FIRST_FIT_SECONDS)
        while loops.running():
            await asyncio.sleep(wait)
            started, cpu_before = time.monotonic(), self._cpu_seconds
            ready = {name for name, at in due.items() if at <= started}
            try:
                versions = await self.fit(only=ready)
            except RedisError as exc:
                log.warning("segment fit failed: %s", exc)
                versions = None
            finally:
                self.last_fit_seconds = time.monotonic() - started
            now, young = time.monotonic(), False
            for name in ready:  # the full period while Redis is away
                seconds = self.every if versions is None else refit_after(self.every, versions.get(name, 0))
                due[name], young = now + seconds, young or seconds < self.every
            wait = max(rest(self._cpu_seconds - cpu_before, young), min(due.values()) - now, 0.0)

    async def fit(self, now_ms: int | None = None, only: Collection[str] | None = None) -> dict[str, int]:
        """Fit every surface (``only`` those named) whose samples changed; the current version number of
        each surface looked at that has one."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        out: dict[str, int] = {}
        for name, surface in self.surfaces.items():
            version = await self._fit_surface(name, surface, now_ms) if only is None or name in only else None
            if version is not None:
                out[name] = version
        for name, surface in self.linear.items():
            version = await self._fit_linear(name, surface, now_ms) if only is None or name in only else None
            if version is not None:
                out[name] = version
        return out

    async def _fit_linear(self, name: str, surface: SurfaceConfig, now_ms: int) -> int | None:
        """Estimate a linear surface's prior strength from the shards' samples; its version number."""
        key = keys.linear_prior_key(name, surface.fingerprint)
        dim, n_arms = surface.context_dim, len(surface.items)
        rows, digest = await self._entries(surface, now_ms, lambda blob: decode_linear(blob, n_arms, dim))
        current: Any = await self.redis.hget(key, VERSION_FIELD)
        previous = None if current is None else int(current)
        if digest == self._fitted.get(name) or not rows:
            return previous
        grams, xrs = np.zeros((len(rows), n_arms, dim, dim)), np.zeros((len(rows), n_arms, dim))
        for i, (arms, gram, xr) in enumerate(rows):
            grams[i, arms], xrs[i, arms] = gram, xr
        config = surface.policy_config
        ridge = config.ridge if isinstance(config, RidgeConfig) else 1.0
        strength = await self._in_background(functools.partial(linear_strength, grams, xrs, ridge))
        self._fitted[name] = digest
        if strength is None:
            return previous
        version = (previous or 0) + 1
        fields = {VERSION_FIELD: version, STRENGTH_FIELD: repr(strength), USERS_FIELD: len(rows), CREATED_FIELD: now_ms}
        await self.redis.hset(key, mapping=fields)  # type: ignore[arg-type]
        self.fits += 1
        log.info("linear prior of %s: version %d, strength %.1f from %d users", name, version, strength, len(rows))
        return version

    async def _fit_surface(self, name: str, surface: SurfaceConfig, now_ms: int) -> int | None:
        model_key = keys.segment_model_key(name, surface.fingerprint)
        plays, sums, digest = await self._sample(surface, now_ms)
        stored: Any = await self.redis.hmget(model_key, [MODEL_FIELD, VERSION_FIELD, NEXT_ID_FIELD])
        previous_blob = stored[0]
        previous = _decoded(previous_blob, name)
        after = None if previous is not None else _counters(stored[1], stored[2])
        # The current number: the model's, or the one stored beside its unreadable bytes.
        number = previous.version if previous is not None else None if after is None else after[0]
        if digest == self._fitted.get(name):
            return number
        fit = functools.partial(
            fit_segments_and_mixture, plays, sums, (number or 0) + 1, surface.cold_start.max_segments
        )
        fitted = await self._in_background(fit)
        self._fitted[name] = digest
        if fitted is None:
            return number
        segments, mixture = fitted
        version = next_version(previous, segments, now_ms, mixture, after)
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(model_key)
                current: Any = await pipe.hget(model_key, MODEL_FIELD)
                if current != previous_blob:
                    return None  # another fitter wrote a version meanwhile: its version stands
                pipe.multi()
                fields: Any = {
                    MODEL_FIELD: encode(version),
                    VERSION_FIELD: str(version.version),
                    NEXT_ID_FIELD: str(version.next_id),
                }
                if previous_blob is not None:
                    fields[PREVIOUS_FIELD] = previous_blob
                pipe.hset(model_key, mapping=fields)
                await pipe.execute()
            except WatchError:
                return None
        self.fits += 1
        log.info("segments of %s: version %d, %d segments", name, version.version, version.model.k)
        return version.version

    async def _sample(self, surface: SurfaceConfig, now_ms: int) -> tuple[np.ndarray, np.ndarray, bytes]:
        """(users x arms) plays and reward sums of every shard's sample, and a digest of them."""
        n_arms = len(surface.items)
        rows, digest = await self._entries(surface, now_ms, lambda blob: decode_evidence(blob, n_arms))
        plays, sums = np.zeros((len(rows), n_arms)), np.zeros((len(rows), n_arms))
        for i, (arms, n, x) in enumerate(rows):
            plays[i, arms], sums[i, arms] = n, x
        return plays, sums, digest

    async def _entries(
        self, surface: SurfaceConfig, now_ms: int, decoder: Callable[[bytes], tuple[int, Any, Any, Any]]
    ) -> tuple[list[tuple[Any, Any, Any]], bytes]:
        """Every shard's sample entries of ``surface``, decoded (without their time), and a digest of
        them. Entries past the users' retention, or unreadable, are deleted."""
        sample_keys = [keys.segment_sample_key(surface.name, surface.fingerprint, k) for k in range(self.shards)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in sample_keys:
                pipe.hgetall(key)
            stored: list[Any] = await pipe.execute()
        rows: list[tuple[Any, Any, Any]] = []
        digest = hashlib.blake2b(digest_size=16)
        expired: dict[str, list[bytes]] = {}
        for key, entries in zip(sample_keys, stored, strict=True):
            for pseudonym in sorted(entries):
                if pseudonym == THRESHOLD_FIELD.encode():
                    continue
                blob = entries[pseudonym]
                try:
                    updated_ms, *row = decoder(blob)
                except ValueError:
                    expired.setdefault(key, []).append(pseudonym)
                    continue
                if updated_ms < now_ms - self.retention_ms:
                    expired.setdefault(key, []).append(pseudonym)
                    continue
                digest.update(pseudonym + blob)
                rows.append((row[0], row[1], row[2]))  # (arms, per-arm arrays, per-arm arrays)
        for key, fields in expired.items():
            await self.redis.hdel(key, *fields)
        return rows, digest.digest()


def _counters(number: bytes | None, next_id: bytes | None) -> tuple[int, int] | None:
    """(version number, next segment id) stored beside a model whose bytes are unreadable; None if
    there is no number. A fitter before ``NEXT_ID_FIELD`` stored no next id: every version gives at
    most ``MAX_SEGMENTS`` new ids, so ids from ``MAX_SEGMENTS * (number + 1)`` on were never given.

    >>> _counters(b"7", b"12"), _counters(b"7", None), _counters(None, b"3"), _counters(b"x", None)
    ((7, 12), (7, 256), None, None)
    """
    try:
        last = int(number) if number is not None else None
        given = int(next_id) if next_id is not None else None
    except ValueError:
        return None
    if last is None or last < 0:
        return None
    return last, given if given is not None and given >= 0 else MAX_SEGMENTS * (last + 1)


def _decoded(blob: bytes | None, name: str) -> SegmentVersion | None:
    if blob is None:
        return None
    try:
        return decode(blob)
    except ValueError as exc:
        log.warning("segments of %s: refitting over an unreadable model (numbering goes on): %s", name, exc)
        return None
