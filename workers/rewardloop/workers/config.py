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
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardloop.learning.experiments import ExperimentConfig, experiment_from_dict
from rewardloop.learning.features.realtime import RealtimeFeatures
from rewardloop.learning.params import ConfigError, integer_in, reject_unknown, within
from rewardloop.learning.rewards import QualityConfig
from rewardloop.learning.rewards.ledger import prune_slack_ms
from rewardloop.learning.surface import SurfaceConfig, longest_window_ms, surface_from_dict
from rewardloop.state.retention import Retention

DEFAULT_CONFIG = Path(__file__).with_name("default_config.toml")
# Dev-only key: deployments set REWARDLOOP_PSEUDONYM_KEY (see README, "Privacy").
DEV_PSEUDONYM_KEY = "rewardloop-dev-pseudonym-key"
# Moved to learning/ (surface.py, experiments/, params.py); importable from here until callers move.
__all__ = ["DEFAULT_CONFIG", "DEV_PSEUDONYM_KEY", "ServiceConfig"]


@dataclass(frozen=True)
class ServiceConfig:
    surfaces: Mapping[str, SurfaceConfig]
    experiments: Mapping[str, ExperimentConfig]
    shards: int = 2
    seed: int = 0
    snapshot_every: int = 32
    # Memory a shard may use for what it holds (users, ledgers, recent decisions), in MiB.
    memory_budget_mb: int = 1024
    pseudonym_key: str = DEV_PSEUDONYM_KEY
    # Feedback quality limits (rewards/quality.py); load generators and simulators are no humans.
    quality: QualityConfig = field(default_factory=QualityConfig)
    # Per-user real-time features (realtime.py) that surfaces may use as context.
    realtime: RealtimeFeatures = field(default_factory=RealtimeFeatures)
    # How long logs and learned states stay in Redis (state/retention.py).
    retention: Retention = field(default_factory=Retention)
    # How often the segment fitter refits every surface's segments (workers/segments.py); 0: only
    # when asked (tests and benchmarks that must know when segments change).
    segment_fit_seconds: int = 30

    def __post_init__(self) -> None:
        """What holds across the parts; each surface and experiment has checked itself."""
        integer_in("service.shards", self.shards, 1, 256)
        integer_in("service.seed", self.seed, 0, 2**63 - 1)
        integer_in("service.snapshot_every", self.snapshot_every, 1, 1_000_000)
        integer_in("service.memory_budget_mb", self.memory_budget_mb, 1, 1_048_576)
        integer_in("service.segment_fit_seconds", self.segment_fit_seconds, 0, 86_400)
        if not self.surfaces:
            raise ConfigError("surfaces: at least one surface must be configured")
        for name, surface in self.surfaces.items():
            if surface.realtime is not None and surface.realtime != self.realtime:
                raise ConfigError(f"surfaces.{name}.realtime: not the service's real-time feature config")
        # Real-time activity is rebuilt on load from the logs' last horizon: they must hold it.
        uses_realtime = any(s.features.realtime for s in self.surfaces.values())
        if uses_realtime and self.retention.logs_seconds * 1000 < self.realtime.horizon_ms + self.quality.max_future_ms:
            raise ConfigError(
                "service.retention.logs_seconds must cover the real-time horizon "
                f"({self.realtime.horizon_ms} ms + {self.quality.max_future_ms} ms), got {self.retention.logs_seconds}"
            )
        for name, experiment in self.experiments.items():
            for surface_name in experiment.surfaces:
                if surface_name not in self.surfaces:
                    raise ConfigError(f"experiments.{name}.surfaces: unknown surface {surface_name!r}")

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
        known = {
            "shards", "seed", "snapshot_every", "memory_budget_mb", "pseudonym_key", "quality", "realtime", "retention",
            "segment_fit_seconds",
        }  # fmt: skip
        reject_unknown("service", service, known)
        shards = integer_in("service.shards", service.get("shards", 2), 1, 256)
        seed = integer_in("service.seed", service.get("seed", 0), 0, 2**63 - 1)
        snapshot_every = integer_in("service.snapshot_every", service.get("snapshot_every", 32), 1, 1_000_000)
        key = os.environ.get("REWARDLOOP_PSEUDONYM_KEY") or service.get("pseudonym_key", DEV_PSEUDONYM_KEY)
        realtime = _realtime(service.get("realtime", {}))
        surfaces = {name: surface_from_dict(name, spec, realtime) for name, spec in raw.get("surfaces", {}).items()}
        if not surfaces:
            raise ConfigError("surfaces: at least one surface must be configured")
        experiments = {
            name: experiment_from_dict(name, spec, surfaces) for name, spec in raw.get("experiments", {}).items()
        }
        return cls(
            surfaces=surfaces,
            experiments=experiments,
            shards=shards,
            seed=seed,
            snapshot_every=snapshot_every,
            memory_budget_mb=integer_in(
                "service.memory_budget_mb", service.get("memory_budget_mb", 1024), 1, 1_048_576
            ),
            pseudonym_key=str(key),
            quality=_quality(service.get("quality", {})),
            realtime=realtime,
            retention=_retention(service.get("retention", {})),
            segment_fit_seconds=integer_in(
                "service.segment_fit_seconds", service.get("segment_fit_seconds", 30), 0, 86_400
            ),
        )

    @property
    def join_ms(self) -> int:
        """How long after a decision feedback can still join it: the longest reward window, plus
        the age at which feedback is flagged instead (``quality.max_age_ms``)."""
        return longest_window_ms(self.surfaces.values()) + self.quality.max_age_ms

    @property
    def settled_ms(self) -> int:
        """How long after a decision feedback can still change its reward: the longest reward window,
        plus the ledger's horizon (``quality.max_age_ms``, ``learning/rewards/ledger.py``), plus how
        long past it memory may still hold an entry. Stored ledger entries live this long."""
        return self.join_ms + prune_slack_ms(self.quality.max_age_ms)


def _quality(spec: Any) -> QualityConfig:
    """``[service.quality]``: burst_per_second, burst_per_minute, max_age_ms, max_future_ms."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"service.quality must be a table, got {spec!r}")
    reject_unknown("service.quality", spec, {"burst_per_second", "burst_per_minute", "max_age_ms", "max_future_ms"})
    try:
        return QualityConfig(**spec)
    except ConfigError as exc:
        raise within("service.quality", exc) from exc


def _retention(spec: Any) -> Retention:
    """``[service.retention]``: logs_seconds, user_state_seconds, dedup_seconds."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"service.retention must be a table, got {spec!r}")
    reject_unknown("service.retention", spec, {f.name for f in dataclasses.fields(Retention)})
    return Retention(**spec)


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
