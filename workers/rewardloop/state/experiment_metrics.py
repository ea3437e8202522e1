"""Exposures and streaming metric sums in Redis (the pure rules are `learning/experiments/attribution.py`).

- `expose`: the front, for every assignment it answers, sets the user's exposure field if it is not
  set yet and, in the same script, counts the user in the variant's n: a first exposure is counted
  exactly once however many fronts answer at once, and the user's variant is recorded as it was
  first given.
- `record_updates`: the shard that owns the user, after feedback is durable, writes the user's new
  metric values and adds the variant sums' deltas in one transaction.
- `read_stats`: an experiment's sums, for the stats engine.

The user's hash expires `USER_TTL_SECONDS` after its last write, so exposures of users who left
do not pile up; the sums keep counting them (they were exposed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from rewardloop.learning.experiments.attribution import (
    ATTRIBUTED_FIELD,
    EXPOSURE_PREFIX,
    Update,
    covariate_field,
    exposure_value,
    value_field,
)
from rewardloop.state.keys import UserKeys, experiment_stats_key

USER_TTL_SECONDS = 180 * 86_400

# KEYS[1]: the user's hash; KEYS[2..]: each experiment's stats. ARGV[1]: ttl, then per experiment
# (field, variant, exposure value, the experiment's creation ms). An exposure recorded before the
# experiment was created belongs to a deleted experiment of the same name: its fields go and the
# user is exposed afresh. Returns per experiment 1 if the exposure was new, else 0.
_EXPOSE = """
local new = {}
for i = 2, #KEYS do
  local at = 2 + (i - 2) * 4
  local field = ARGV[at]
  local current = redis.call('HGET', KEYS[1], field)
  local fresh = not current
  if current then
    local since = tonumber(string.match(current, '|(%d+)$'))
    if since and since < tonumber(ARGV[at + 3]) then
      local name = string.sub(field, 3)
      local values = 'm:' .. name .. ':'
      for _, key in ipairs(redis.call('HKEYS', KEYS[1])) do
        if key == 'c:' .. name or string.sub(key, 1, #values) == values then
          redis.call('HDEL', KEYS[1], key)
        end
      end
      fresh = true
    end
  end
  if fresh then
    redis.call('HSET', KEYS[1], field, ARGV[at + 2])
    redis.call('HINCRBY', KEYS[i], ARGV[at + 1] .. '|n', 1)
    new[#new + 1] = 1
  else
    new[#new + 1] = 0
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return new
"""

# CUPED's covariate, set once. KEYS[1]: the user's hash, KEYS[2]: the experiment's stats. ARGV:
# covariate field, x, the primary metric's value field, "<variant>|<metric>|", ttl. The user's y so
# far joins Σxy here; later changes of y add x·Δy (`record_updates`): both run atomically, so
# whichever comes first, Σxy ends as x·y.
_COVARIATE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
local x = tonumber(ARGV[2])
local y = tonumber(redis.call('HGET', KEYS[1], ARGV[3]) or '0')
redis.call('HINCRBYFLOAT', KEYS[2], ARGV[4] .. 'sx', x)
redis.call('HINCRBYFLOAT', KEYS[2], ARGV[4] .. 'sxx', x * x)
if y ~= 0 then
  redis.call('HINCRBYFLOAT', KEYS[2], ARGV[4] .. 'sxy', x * y)
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

# Within `record_updates`' transaction: KEYS[1] the user's hash, KEYS[2] the stats; ARGV: the
# covariate field, the Σxy field, Δy. Adds x·Δy when the user's covariate is set.
_COVARIATE_DELTA = """
local x = redis.call('HGET', KEYS[1], ARGV[1])
if x then
  redis.call('HINCRBYFLOAT', KEYS[2], ARGV[2], tonumber(x) * tonumber(ARGV[3]))
end
return 0
"""


class Exposures:
    """The front's side: record first exposures (one script call per answered Assign/Recommend)."""

    def __init__(self, redis: aioredis.Redis):
        self._script = redis.register_script(_EXPOSE)
        self._covariate = redis.register_script(_COVARIATE)

    async def expose(
        self,
        pseudonym: str,
        assignments: Sequence[tuple[str, str]],
        now_ms: int,
        created_ms: Mapping[str, int] | None = None,
    ) -> list[bool]:
        """Records the user's assignments as exposures; for each, whether it was the first.
        ``created_ms``: each experiment's creation (older exposures are a deleted namesake's)."""
        if not assignments:
            return []
        created_ms = created_ms or {}
        keys = [UserKeys(pseudonym).experiments, *(experiment_stats_key(e) for e, _ in assignments)]
        args: list[Any] = [USER_TTL_SECONDS]
        for experiment, variant in assignments:
            args += [
                EXPOSURE_PREFIX + experiment,
                variant,
                exposure_value(variant, now_ms),
                created_ms.get(experiment, 0),
            ]
        return [bool(flag) for flag in await self._script(keys=keys, args=args)]

    async def set_covariate(self, pseudonym: str, experiment: str, variant: str, metric: str, x: float) -> bool:
        """Sets the user's CUPED covariate for ``experiment`` (once) and adds it to the sums."""
        keys = [UserKeys(pseudonym).experiments, experiment_stats_key(experiment)]
        args: list[Any] = [covariate_field(experiment), repr(float(x)), value_field(experiment, metric),
                           f"{variant}|{metric}|", USER_TTL_SECONDS]  # fmt: skip
        return bool(await self._covariate(keys=keys, args=args))


async def read_users(redis: aioredis.Redis, pseudonyms: Sequence[str]) -> dict[str, dict[str, str]]:
    """Each user's experiment hash (empty for users never exposed)."""
    pipe = redis.pipeline(transaction=False)
    for pseudonym in pseudonyms:
        pipe.hgetall(UserKeys(pseudonym).experiments)
    raw = await pipe.execute()
    return {p: {k.decode(): v.decode() for k, v in fields.items()} for p, fields in zip(pseudonyms, raw, strict=True)}


async def record_updates(
    redis: aioredis.Redis,
    updates: Mapping[str, Update],
    stale: Mapping[str, list[str]] | None = None,
    cuped: Mapping[str, str] | None = None,
    marks: Mapping[str, str] | None = None,
) -> None:
    """Users' new values and the sums' deltas, atomically (MULTI); ``stale``: fields of deleted
    experiments to drop from users' hashes on the way; ``cuped``: experiment -> the metric whose
    Σxy follows its users' covariates; ``marks``: user -> the log id of the last event these
    updates attribute (``ATTRIBUTED_FIELD``, set with the values it accounts for)."""
    stale = {p: fields for p, fields in (stale or {}).items() if fields}
    if not stale and not any(u.values for u in updates.values()):
        return
    cuped = cuped or {}
    delta = redis.register_script(_COVARIATE_DELTA)
    pipe = redis.pipeline(transaction=True)
    for pseudonym, fields in stale.items():
        pipe.hdel(UserKeys(pseudonym).experiments, *fields)
    for pseudonym, update in updates.items():
        if not update.values:
            continue
        key = UserKeys(pseudonym).experiments
        written = [(k, repr(v)) for k, v in update.values.items()]
        if marks and pseudonym in marks:
            written.append((ATTRIBUTED_FIELD, marks[pseudonym]))
        pipe.hset(key, mapping={k: v for k, v in written})
        pipe.expire(key, USER_TTL_SECONDS)
        for (experiment, variant, metric), (dy, dyy) in update.sums.items():
            stats = experiment_stats_key(experiment)
            pipe.hincrbyfloat(stats, f"{variant}|{metric}|sy", dy)
            pipe.hincrbyfloat(stats, f"{variant}|{metric}|syy", dyy)
            if cuped.get(experiment) == metric:
                # Queued in the transaction (awaiting only queues it).
                await delta(keys=[key, stats], args=[covariate_field(experiment), f"{variant}|{metric}|sxy", dy],
                            client=pipe)  # fmt: skip
    await pipe.execute()


@dataclass
class VariantSums:
    n: int = 0
    metrics: dict[str, tuple[float, float]] = field(default_factory=dict)  # (Σy, Σy²)
    covariates: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # (Σx, Σx², Σxy)


async def read_stats(redis: aioredis.Redis, name: str) -> dict[str, VariantSums]:
    """Variant -> its exposed users and, per metric, (Σy, Σy²)."""
    raw: Any = await redis.hgetall(experiment_stats_key(name))
    out: dict[str, VariantSums] = {}
    sums: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in raw.items():
        parts = key.decode().split("|")
        variant = parts[0]
        sums_of = out.setdefault(variant, VariantSums())
        if len(parts) == 2:
            sums_of.n = int(value)
        else:
            sums.setdefault((variant, parts[1]), {})[parts[2]] = float(value)
    for (variant, metric), got in sums.items():
        variant_sums = out.setdefault(variant, VariantSums())
        variant_sums.metrics[metric] = (got.get("sy", 0.0), got.get("syy", 0.0))
        if "sx" in got:
            variant_sums.covariates[metric] = (got["sx"], got.get("sxx", 0.0), got.get("sxy", 0.0))
    return out
