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

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardloop.workers.policies import ConfigError, PolicyConfig, config_from_dict

DEFAULT_CONFIG = Path(__file__).with_name("default_config.toml")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_ITEMS = 10_000
# Dev-only key: deployments set REWARDLOOP_PSEUDONYM_KEY (see README, "Privacy").
DEV_PSEUDONYM_KEY = "rewardloop-dev-pseudonym-key"


@dataclass(frozen=True)
class SurfaceConfig:
    name: str
    policy_config: PolicyConfig
    items: tuple[str, ...]
    index: Mapping[str, int] = field(repr=False, compare=False, hash=False)

    @property
    def fingerprint(self) -> str:
        """Short hash of everything that gives a policy state's arrays their meaning."""
        payload = json.dumps(
            {
                "algorithm": self.policy_config.name,
                "params": self.policy_config.to_dict(),
                "items": self.items,
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
        _reject_unknown("service", service, {"shards", "seed", "snapshot_every", "pseudonym_key"})
        shards = _int_in("service.shards", service.get("shards", 2), 1, 256)
        seed = _int_in("service.seed", service.get("seed", 0), 0, 2**63 - 1)
        snapshot_every = _int_in("service.snapshot_every", service.get("snapshot_every", 32), 1, 1_000_000)
        key = os.environ.get("REWARDLOOP_PSEUDONYM_KEY") or service.get("pseudonym_key", DEV_PSEUDONYM_KEY)
        surfaces = {name: _surface(name, spec) for name, spec in raw.get("surfaces", {}).items()}
        if not surfaces:
            raise ConfigError("surfaces: at least one surface must be configured")
        experiments = {
            name: _experiment(name, spec, surfaces) for name, spec in raw.get("experiments", {}).items()
        }
        return cls(
            surfaces=surfaces,
            experiments=experiments,
            shards=shards,
            seed=seed,
            snapshot_every=snapshot_every,
            pseudonym_key=str(key),
        )


def _surface(name: str, spec: Mapping[str, Any]) -> SurfaceConfig:
    where = f"surfaces.{name}"
    _check_name(where, name)
    _reject_unknown(where, spec, {"algorithm", "params", "items"})
    items = spec.get("items")
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
    algorithm = spec.get("algorithm")
    if not isinstance(algorithm, str):
        raise ConfigError(f"{where}.algorithm must be a string")
    try:
        policy_config = config_from_dict(algorithm, dict(spec.get("params", {})))
    except ConfigError as exc:
        raise ConfigError(f"{where}.params: {exc}") from exc
    return SurfaceConfig(name, policy_config, tuple(items), {item: i for i, item in enumerate(items)})


def _experiment(
    name: str, spec: Mapping[str, Any], surfaces: Mapping[str, SurfaceConfig]
) -> ExperimentConfig:
    where = f"experiments.{name}"
    _check_name(where, name)
    _reject_unknown(where, spec, {"variants", "salt", "traffic", "surfaces"})
    variants = spec.get("variants")
    if not isinstance(variants, Mapping) or len(variants) < 2:
        raise ConfigError(f"{where}.variants must map at least two variant names to weights")
    for variant, weight in variants.items():
        _check_name(f"{where}.variants", variant)
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


def _check_name(where: str, name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"{where}: name {name!r} must be 1..64 characters of [A-Za-z0-9_.-]")


def _reject_unknown(where: str, spec: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _int_in(where: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where} must be an integer in [{low}, {high}], got {value!r}")
    return value
