"""Service and surface configuration, loaded from TOML and validated on load.

A *surface* is one decision point: its catalogue of items and the algorithm (with
hyper-parameters) that ranks them for each user. Experiments map users to variants by
hashing. Every validation error names the offending key, e.g.
``surfaces.home_feed.params: c must be > 0, got -1``.

>>> cfg = ServiceConfig.from_dict({
...     "service": {"shards": 2},
...     "surfaces": {"home": {"algorithm": "ucb1", "items": ["a", "b", "c"]}},
... })
>>> cfg.surfaces["home"].policy_config.name, cfg.surfaces["home"].items
('ucb1', ('a', 'b', 'c'))
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rewardloop.learning.bandits import PolicyConfig, config_from_dict, policy_class
from rewardloop.learning.features.realtime import RealtimeFeatures
from rewardloop.learning.features.schema import FeatureSchema
from rewardloop.learning.params import ConfigError, check_name, integer_in, reject_unknown, within
from rewardloop.learning.rewards import QualityConfig, RewardConfig

DEFAULT_CONFIG = Path(__file__).with_name("default_config.toml")
MAX_ITEMS = 10_000
# Dev-only key: deployments set REWARDLOOP_PSEUDONYM_KEY (see README, "Privacy").
DEV_PSEUDONYM_KEY = "rewardloop-dev-pseudonym-key"


@dataclass(frozen=True)
class ColdStart:
    """How much a user's model leans on the population (and its segment) before its own evidence.

    ``strength`` and ``segment_strength`` are pseudo-observations: the user's model starts as if it
    had seen ``strength`` rewards at the segment's (or population's) estimates, and the segment's
    as if it had seen ``segment_strength`` at the population's. 0 disables the prior.
    """

    strength: float = 2.0
    segment_strength: float = 20.0
    # Feature whose categorical value names the user's segment; None: population only.
    segment_feature: str | None = None


# Surface kinds, each with its decision seam in the shard (workers/kinds.py when it lands).
SURFACE_KINDS = ("bandit",)


@dataclass(frozen=True)
class SurfaceConfig:
    name: str
    policy_config: PolicyConfig
    items: tuple[str, ...]
    index: Mapping[str, int] = field(repr=False, compare=False, hash=False)
    features: FeatureSchema = field(default_factory=FeatureSchema)
    cold_start: ColdStart = field(default_factory=ColdStart)
    item_features: tuple[tuple[float, ...], ...] | None = None
    # How feedback signals become one reward per decision-item (rewards/config.py).
    reward: RewardConfig = field(default_factory=RewardConfig)
    # The service's real-time feature config, when ``features.realtime`` uses it.
    realtime: RealtimeFeatures | None = None
    # What decides on this surface (SURFACE_KINDS): "bandit" chooses items with a policy per user.
    kind: str = "bandit"

    def __post_init__(self) -> None:
        if self.kind not in SURFACE_KINDS:
            raise ConfigError(f"kind must be one of {', '.join(SURFACE_KINDS)}, got {self.kind!r}")

    @property
    def context_dim(self) -> int:
        return self.features.dim

    def item_feature_matrix(self) -> np.ndarray | None:
        return None if self.item_features is None else np.array(self.item_features, dtype=np.float64)

    @functools.cached_property
    def fingerprint(self) -> str:
        """Short hash of everything that gives a policy state's arrays their meaning (cached: hot path)."""
        payload = json.dumps(
            {
                "algorithm": self.policy_config.name,
                "params": self.policy_config.to_dict(),
                "items": self.items,
                "features": self.features.to_dict(),
                "item_features": self.item_features,
                # A user's state is the fused rewards learned: other reward rules, other state.
                "reward": self.reward.to_dict(),
                **({"realtime": _realtime_dict(self.realtime)} if self.realtime is not None else {}),
                # Bandit surfaces predate kinds: their fingerprints (and so their users' snapshots) stay.
                **({"kind": self.kind} if self.kind != "bandit" else {}),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    variants: tuple[tuple[str, float], ...]
    salt: str
    traffic: float
    surfaces: tuple[str, ...]


@dataclass(frozen=True)
class ServiceConfig:
    surfaces: Mapping[str, SurfaceConfig]
    experiments: Mapping[str, ExperimentConfig]
    shards: int = 2
    seed: int = 0
    snapshot_every: int = 32
    pseudonym_key: str = DEV_PSEUDONYM_KEY
    # Feedback quality limits (rewards/quality.py); load generators and simulators are no humans.
    quality: QualityConfig = field(default_factory=QualityConfig)
    # Per-user real-time features (realtime.py) that surfaces may use as context.
    realtime: RealtimeFeatures = field(default_factory=RealtimeFeatures)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> ServiceConfig:
        """Load from `path`, else $REWARDLOOP_CONFIG, else the packaged default."""
        path = Path(path or os.environ.get("REWARDLOOP_CONFIG") or DEFAULT_CONFIG)
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ServiceConfig:
        service = dict(raw.get("service", {}))
        reject_unknown("service", service, {"shards", "seed", "snapshot_every", "pseudonym_key", "quality", "realtime"})
        shards = integer_in("service.shards", service.get("shards", 2), 1, 256)
        seed = integer_in("service.seed", service.get("seed", 0), 0, 2**63 - 1)
        snapshot_every = integer_in("service.snapshot_every", service.get("snapshot_every", 32), 1, 1_000_000)
        key = os.environ.get("REWARDLOOP_PSEUDONYM_KEY") or service.get("pseudonym_key", DEV_PSEUDONYM_KEY)
        realtime = _realtime(service.get("realtime", {}))
        surfaces = {name: _surface(name, spec, realtime) for name, spec in raw.get("surfaces", {}).items()}
        if not surfaces:
            raise ConfigError("surfaces: at least one surface must be configured")
        experiments = {name: _experiment(name, spec, surfaces) for name, spec in raw.get("experiments", {}).items()}
        return cls(
            surfaces=surfaces,
            experiments=experiments,
            shards=shards,
            seed=seed,
            snapshot_every=snapshot_every,
            pseudonym_key=str(key),
            quality=_quality(service.get("quality", {})),
            realtime=realtime,
        )


def _quality(spec: Any) -> QualityConfig:
    """``[service.quality]``: burst_per_second, burst_per_minute, max_age_ms, max_future_ms."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"service.quality must be a table, got {spec!r}")
    reject_unknown("service.quality", spec, {"burst_per_second", "burst_per_minute", "max_age_ms", "max_future_ms"})
    try:
        return QualityConfig(**spec)
    except ConfigError as exc:
        raise within("service.quality", exc) from exc


def _realtime(spec: Any) -> RealtimeFeatures:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"service.realtime must be a table, got {spec!r}")
    known = {f.name for f in dataclasses.fields(RealtimeFeatures)}
    reject_unknown("service.realtime", spec, known)
    try:
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
        return RealtimeFeatures(**values)
    except ConfigError as exc:
        raise within("service.realtime", exc) from exc


def _realtime_dict(config: RealtimeFeatures) -> dict[str, Any]:
    return {
        "windows_ms": list(config.windows_ms), "session_gap_ms": config.session_gap_ms,
        "recency_cap_ms": config.recency_cap_ms, "max_events": config.max_events,
        "categories": list(config.categories), "item_categories": dict(sorted(config.item_categories.items())),
    }  # fmt: skip


def _surface(name: str, spec: Mapping[str, Any], realtime: RealtimeFeatures | None = None) -> SurfaceConfig:
    where = f"surfaces.{name}"
    check_name(where, name)
    reject_unknown(
        where, spec, {"kind", "algorithm", "params", "items", "features", "cold_start", "item_features", "reward"}
    )
    kind = spec.get("kind", "bandit")
    if kind not in SURFACE_KINDS:
        raise ConfigError(f"{where}.kind must be one of {', '.join(SURFACE_KINDS)}, got {kind!r}")
    items = _items(where, spec.get("items"))
    algorithm = spec.get("algorithm")
    if not isinstance(algorithm, str):
        raise ConfigError(f"{where}.algorithm must be a string")
    try:
        policy_config = config_from_dict(algorithm, dict(spec.get("params", {})))
    except ConfigError as exc:
        raise ConfigError(f"{where}.params: {exc}") from exc
    features = FeatureSchema.from_dict(spec.get("features", {}), f"{where}.features")
    realtime = realtime or RealtimeFeatures()
    for feature in features.realtime:
        if feature not in realtime.names:
            known = ", ".join(realtime.names)
            raise ConfigError(f"{where}.features.realtime: unknown feature {feature!r} (service.realtime has {known})")
    if features.realtime and not policy_class(policy_config).contextual:
        raise ConfigError(f"{where}.features.realtime: {algorithm} ignores context; choose a contextual algorithm")
    reward = RewardConfig.from_dict(spec.get("reward", {}), f"{where}.reward")
    if reward.half_life_seconds is not None and not policy_class(policy_config).supports_prior:
        raise ConfigError(
            f"{where}.reward.half_life_seconds: {algorithm} forgets per update already (or keeps no additive "
            "statistics); time decay needs one of the count or linear algorithms"
        )
    return SurfaceConfig(
        name,
        policy_config,
        tuple(items),
        {item: i for i, item in enumerate(items)},
        features=features,
        cold_start=_cold_start(where, spec.get("cold_start", {}), features),
        item_features=_item_features(where, spec.get("item_features"), items),
        reward=reward,
        realtime=realtime if features.realtime else None,
        kind=kind,
    )


def _items(where: str, items: Any) -> list[str]:
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where}.items must be a non-empty list of item ids")
    if len(items) > MAX_ITEMS:
        raise ConfigError(f"{where}.items must have at most {MAX_ITEMS} items, got {len(items)}")
    for item in items:
        if not isinstance(item, str) or not 1 <= len(item.encode()) <= 256:
            raise ConfigError(f"{where}.items: item ids must be strings of 1..256 bytes, got {item!r}")
    if len(set(items)) != len(items):
        duplicate = next(i for i in items if items.count(i) > 1)
        raise ConfigError(f"{where}.items: duplicate item id {duplicate!r}")
    return items


def _cold_start(where: str, spec: Mapping[str, Any], features: FeatureSchema) -> ColdStart:
    where = f"{where}.cold_start"
    reject_unknown(where, spec, {"strength", "segment_strength", "segment_feature"})
    defaults = ColdStart()
    strengths = {}
    for key in ("strength", "segment_strength"):
        value = spec.get(key, getattr(defaults, key))
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e6:
            raise ConfigError(f"{where}.{key} must be a number in [0, 1e6), got {value!r}")
        strengths[key] = float(value)
    segment_feature = spec.get("segment_feature")
    if segment_feature is not None and segment_feature not in dict(features.categorical):
        raise ConfigError(f"{where}.segment_feature must name a categorical feature, got {segment_feature!r}")
    return ColdStart(segment_feature=segment_feature, **strengths)


def _item_features(where: str, spec: Any, items: list[str]) -> tuple[tuple[float, ...], ...] | None:
    """Per-item feature vectors (hybrid LinUCB): a table item id -> list of numbers."""
    if spec is None:
        return None
    where = f"{where}.item_features"
    if not isinstance(spec, Mapping) or set(spec) != set(items):
        raise ConfigError(f"{where} must give a vector for every item of the catalogue, and no other")
    rows = [spec[item] for item in items]
    width = len(rows[0]) if isinstance(rows[0], list) else 0
    for item, row in zip(items, rows, strict=True):
        ok = isinstance(row, list) and len(row) == width > 0
        if not ok or not all(isinstance(v, int | float) and math.isfinite(v) for v in row):
            raise ConfigError(f"{where}.{item} must be a list of {width or 'some'} finite numbers like the others")
    return tuple(tuple(float(v) for v in row) for row in rows)


def _experiment(name: str, spec: Mapping[str, Any], surfaces: Mapping[str, SurfaceConfig]) -> ExperimentConfig:
    where = f"experiments.{name}"
    check_name(where, name)
    reject_unknown(where, spec, {"variants", "salt", "traffic", "surfaces"})
    variants = spec.get("variants")
    if not isinstance(variants, Mapping) or len(variants) < 2:
        raise ConfigError(f"{where}.variants must map at least two variant names to weights")
    for variant, weight in variants.items():
        check_name(f"{where}.variants", variant)
        if not isinstance(weight, int | float) or not weight > 0:
            raise ConfigError(f"{where}.variants.{variant} must be a weight > 0, got {weight!r}")
    traffic = spec.get("traffic", 1.0)
    if not isinstance(traffic, int | float) or not 0 < traffic <= 1:
        raise ConfigError(f"{where}.traffic must be in (0, 1], got {traffic!r}")
    covered = tuple(spec.get("surfaces", ()))
    for surface in covered:
        if surface not in surfaces:
            raise ConfigError(f"{where}.surfaces: unknown surface {surface!r}")
    return ExperimentConfig(
        name=name,
        variants=tuple((v, float(w)) for v, w in variants.items()),
        salt=str(spec.get("salt", name)),
        traffic=float(traffic),
        surfaces=covered,
    )
