"""A surface: one decision point, its catalogue and what ranks it (a config that checks itself).

``SurfaceConfig`` validates itself in ``__post_init__`` (MABWiser style), so no code path builds
an unchecked surface; ``surface_from_dict`` only turns a TOML table into one and says where the
table is: ``surfaces.home.items: duplicate item id 'a'``. Its ``fingerprint`` names everything
that gives a policy state's arrays their meaning; it is stored in snapshots and prior keys, so
its payload must not change.

>>> from rewardloop.learning.bandits import config_from_dict
>>> surface = SurfaceConfig("home", config_from_dict("ucb1"), ("a", "b"))
>>> surface.index["b"], surface.kind
(1, 'bandit')
>>> SurfaceConfig("home", config_from_dict("ucb1"), ("a", "a"))
Traceback (most recent call last):
...
rewardloop.learning.params.ConfigError: items: duplicate item id 'a'
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rewardloop.learning.agents.spec import AgentSpec
from rewardloop.learning.bandits import PolicyConfig, config_from_dict, policy_class
from rewardloop.learning.features.realtime import RealtimeFeatures
from rewardloop.learning.features.schema import FeatureSchema
from rewardloop.learning.params import ConfigError, check_name, reject_unknown, within
from rewardloop.learning.rewards import RewardConfig

MAX_ITEMS = 10_000
# Surface kinds, each with its decision seam in the shard (workers/kinds.py).
SURFACE_KINDS = ("bandit", "agent")
ACTION_VALUES = "epsilon_greedy"
"""An agent surface's per-user model of its actions: the reward ledger trains it as on any surface
(fused rewards, windows, time decay), and the transitions take their rewards from that ledger."""
DEFAULT_STRENGTH = 2.0
"""Prior strength (pseudo-observations) where none is configured or estimated yet."""
MAX_SEGMENTS = 32
SEGMENTS_BY_DEFAULT = frozenset({"thompson"})
"""Algorithms that learn segments unless ``cold_start.segments`` says otherwise: with segments,
epsilon-greedy and UCB1 exploit the segment's favourites and stop exploring a long tail (0.52-0.60x
the best item on ``long_tail`` against 0.78-0.87x from the population prior)."""
EXPLOIT_FIRST_BY_DEFAULT = frozenset({"thompson"})
"""Algorithms that serve a user without evidence the prior's best items unless ``cold_start.explore_first``."""
SURFACE_KEYS = {"kind", "algorithm", "params", "items", "features", "cold_start", "item_features", "reward", "agent"}


@dataclass(frozen=True)
class ColdStart:
    """How much a user's model leans on the population (and its segment) before its own evidence.

    ``strength`` and ``segment_strength`` are pseudo-observations: the user's model starts as if it
    had seen ``strength`` rewards at the segment's (or population's) estimates, and the segment's
    as if it had seen ``segment_strength`` at the population's. 0 disables the prior.

    ``strength`` unset (the default) is estimated from the data: with learned ``segments`` it is the
    strength the user's segments were estimated to have (empirical Bayes, ``learning/segments``);
    before the first segments are fitted, and for policies without them, ``DEFAULT_STRENGTH``.
    ``segments`` learns behaviour-based segments of the surface's users, at most ``max_segments``
    of them, and beside them a finer mixture (16 components), and serves each user from the mixture's
    components that explain their behaviour (count-based policies:
    thompson, ucb1, epsilon_greedy, softmax, gaussian_thompson). Unset, it is on for the algorithms
    it was measured to help across the population families (``SEGMENTS_BY_DEFAULT``; bench/README.md,
    "Segments in the service"): Thompson sampling, whose draws keep exploring under a strong prior.

    On Thompson surfaces a user with no evidence on the surface yet is served the prior's best items
    (``select``'s ``exploit``): their first request has nothing of theirs to learn from, and what the
    population already knows is worth more to them than a draw around it (bench/README.md, "First
    request"). ``explore_first`` (unset: false for ``EXPLOIT_FIRST_BY_DEFAULT``, true for the others,
    whose exploration is what they were configured for: epsilon-greedy at epsilon 1 logs uniformly)
    says whether the algorithm explores from the first request on.
    """

    strength: float | None = None
    segment_strength: float = 20.0
    # Feature whose categorical value names the user's segment; None: population only.
    segment_feature: str | None = None
    segments: bool | None = None
    max_segments: int = 8
    explore_first: bool | None = None

    def exploits_first(self, algorithm: str, own_updates: int) -> bool:
        """Whether a user with ``own_updates`` on the surface is served the prior's best items (when
        there is a prior): none of their own yet, and the algorithm does not explore first
        (``explore_first``, else the algorithm's default)."""
        explores = algorithm not in EXPLOIT_FIRST_BY_DEFAULT if self.explore_first is None else self.explore_first
        return own_updates == 0 and not explores

    def learns_segments(self, algorithm: str) -> bool:
        """Whether a surface of ``algorithm`` learns segments (``segments``, else the algorithm's default)."""
        return algorithm in SEGMENTS_BY_DEFAULT if self.segments is None else self.segments

    @property
    def takes_prior(self) -> bool:
        """Whether users lean on a prior at all: a strength of 0 turns it (and segments) off."""
        return self.strength is None or self.strength > 0

    @property
    def prior_strength(self) -> float:
        """The configured strength, or ``DEFAULT_STRENGTH`` where it is to be estimated."""
        return DEFAULT_STRENGTH if self.strength is None else self.strength

    def __post_init__(self) -> None:
        if self.segments is not None and not isinstance(self.segments, bool):
            raise ConfigError(f"segments must be true or false, got {self.segments!r}")
        if self.explore_first is not None and not isinstance(self.explore_first, bool):
            raise ConfigError(f"explore_first must be true or false, got {self.explore_first!r}")
        value = self.max_segments
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SEGMENTS:
            raise ConfigError(f"max_segments must be an integer in [1, {MAX_SEGMENTS}], got {value!r}")
        for key in ("strength", "segment_strength"):
            value = getattr(self, key)
            if key == "strength" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e6:
                raise ConfigError(f"{key} must be a number in [0, 1e6), got {value!r}")
            object.__setattr__(self, key, float(value))
        if self.segment_feature is not None and not isinstance(self.segment_feature, str):
            raise ConfigError(f"segment_feature must name a categorical feature, got {self.segment_feature!r}")


@dataclass(frozen=True)
class SurfaceConfig:
    name: str
    policy_config: PolicyConfig
    items: tuple[str, ...]
    features: FeatureSchema = field(default_factory=FeatureSchema)
    cold_start: ColdStart = field(default_factory=ColdStart)
    item_features: tuple[tuple[float, ...], ...] | None = None
    # How feedback signals become one reward per decision-item (rewards/config.py).
    reward: RewardConfig = field(default_factory=RewardConfig)
    # The service's real-time feature config, when ``features.realtime`` uses it.
    realtime: RealtimeFeatures | None = None
    # What decides on this surface (SURFACE_KINDS): "bandit" chooses items with a policy per user;
    # "agent" chooses one action (``items``) per turn of a session with a policy shared by all users.
    kind: str = "bandit"
    # An agent surface's learner, sessions and replicas (``learning/agents/spec.py``).
    agent: AgentSpec | None = None
    # Item id -> arm: computed from ``items``, so the two cannot disagree.
    index: Mapping[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        """The checks in the order the TOML parser met them, so a table's first mistake is reported."""
        check_name("name", self.name)
        if self.kind not in SURFACE_KINDS:
            raise ConfigError(f"kind must be one of {', '.join(SURFACE_KINDS)}, got {self.kind!r}")
        check_items(self.items)
        self._check_agent()
        algorithm = self.policy_config.name
        realtime = self.realtime or RealtimeFeatures()
        for feature in self.features.realtime:
            if feature not in realtime.names:
                known = ", ".join(realtime.names)
                raise ConfigError(f"features.realtime: unknown feature {feature!r} (service.realtime has {known})")
        if self.features.realtime and not policy_class(self.policy_config).contextual:
            raise ConfigError(f"features.realtime: {algorithm} ignores context; choose a contextual algorithm")
        if self.features.realtime and self.realtime is None:
            raise ConfigError("realtime: features.realtime needs the service's real-time feature config")
        if self.reward.half_life_seconds is not None and not policy_class(self.policy_config).supports_prior:
            raise ConfigError(
                f"reward.half_life_seconds: {algorithm} forgets per update already (or keeps no additive "
                "statistics); time decay needs one of the count or linear algorithms"
            )
        segment_feature = self.cold_start.segment_feature
        if segment_feature is not None and segment_feature not in dict(self.features.categorical):
            raise ConfigError(f"cold_start.segment_feature must name a categorical feature, got {segment_feature!r}")
        if self.item_features is not None:
            check_item_feature_rows(self.items, self.item_features)
        object.__setattr__(self, "index", {item: i for i, item in enumerate(self.items)})

    def _check_agent(self) -> None:
        if self.kind == "agent":
            if self.agent is None:
                object.__setattr__(self, "agent", AgentSpec())
            if self.features.realtime or self.item_features is not None:
                raise ConfigError("agent surfaces take request features only (no features.realtime, no item_features)")
        elif self.agent is not None:
            raise ConfigError('agent: only an agent surface (kind = "agent") has an agent table')

    @property
    def context_dim(self) -> int:
        return self.features.dim

    @property
    def spec(self) -> AgentSpec:
        """The agent surface's spec (``kind == "agent"``)."""
        if self.agent is None:
            raise ValueError(f"surface {self.name!r} is not an agent surface")
        return self.agent

    def item_feature_matrix(self) -> np.ndarray | None:
        return None if self.item_features is None else np.array(self.item_features, dtype=np.float64)

    def deciding_with(self, key: str, policy_config: PolicyConfig) -> SurfaceConfig:
        """This surface deciding with another policy (a policy experiment's variant,
        ``experiments/policies.py``), its users' states of it kept under ``key``. ConfigError when
        the surface cannot host it (real-time features need a contextual algorithm, time decay one
        with additive statistics); the fingerprint is the new policy's. On an agent surface the
        variant is a bandit over the same actions and request features, its state per user (bandit
        vs agent: the turns it decides are not the agent's, nor its training)."""
        derived = dataclasses.replace(self, policy_config=policy_config, kind="bandit", agent=None)
        object.__setattr__(derived, "name", key)  # not a surface name: no configured surface can take it
        return derived

    @functools.cached_property
    def fingerprint(self) -> str:
        """Short hash of everything that gives a policy state's arrays their meaning (cached: hot path)."""
        payload = json.dumps(
            {
                "algorithm": self.policy_config.name,
                # What only steers choices (UCB's bonus) is left out: tuning it keeps the states.
                "params": {
                    k: v for k, v in self.policy_config.to_dict().items() if k not in self.policy_config.selection_only
                },
                "items": self.items,
                "features": self.features.to_dict(),
                "item_features": self.item_features,
                # A user's state is the fused rewards learned: other reward rules, other state.
                "reward": self.reward.to_dict(),
                **({"realtime": realtime_dict(self.realtime)} if self.realtime is not None else {}),
                # Bandit surfaces predate kinds: their fingerprints (and so their users' snapshots) stay.
                **({"kind": self.kind} if self.kind != "bandit" else {}),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def longest_window_ms(surfaces: Iterable[SurfaceConfig]) -> int:
    """The longest reward window of ``surfaces`` (ms): how long a decision's entries stay open."""
    return max((s.reward.window_ms for s in surfaces), default=0)


def realtime_dict(config: RealtimeFeatures) -> dict[str, Any]:
    """The real-time config as it enters the fingerprint (part of the stored fingerprints: keep as is)."""
    return {
        "windows_ms": list(config.windows_ms), "session_gap_ms": config.session_gap_ms,
        "recency_cap_ms": config.recency_cap_ms, "max_events": config.max_events,
        "categories": list(config.categories), "item_categories": dict(sorted(config.item_categories.items())),
    }  # fmt: skip


def check_items(items: Any) -> None:
    """A catalogue: 1..MAX_ITEMS distinct ids of 1..256 bytes (a TOML list or the stored tuple)."""
    if not isinstance(items, list | tuple) or not items:
        raise ConfigError("items must be a non-empty list of item ids")
    if len(items) > MAX_ITEMS:
        raise ConfigError(f"items must have at most {MAX_ITEMS} items, got {len(items)}")
    for item in items:
        if not isinstance(item, str) or not 1 <= len(item.encode()) <= 256:
            raise ConfigError(f"items: item ids must be strings of 1..256 bytes, got {item!r}")
    if len(set(items)) != len(items):
        duplicate = next(i for i in items if items.count(i) > 1)
        raise ConfigError(f"items: duplicate item id {duplicate!r}")


def check_item_feature_rows(items: Sequence[str], rows: Sequence[Any]) -> None:
    """Per-item vectors (hybrid LinUCB): one row per item, all of one width, finite numbers."""
    if len(rows) != len(items):
        raise ConfigError("item_features must give a vector for every item of the catalogue, and no other")
    width = len(rows[0]) if isinstance(rows[0], list | tuple) else 0
    for item, row in zip(items, rows, strict=True):
        ok = isinstance(row, list | tuple) and len(row) == width > 0
        if not ok or not all(isinstance(v, int | float) and math.isfinite(v) for v in row):
            raise ConfigError(
                f"item_features.{item} must be a list of {width or 'some'} finite numbers like the others"
            )


def surface_from_dict(name: str, spec: Mapping[str, Any], realtime: RealtimeFeatures | None = None) -> SurfaceConfig:
    """``[surfaces.<name>]``: the TOML shape (keys, lists, defaults); the surface checks the values."""
    where = f"surfaces.{name}"
    check_name(where, name)
    reject_unknown(where, spec, SURFACE_KEYS)
    kind = spec.get("kind", "bandit")
    if kind not in SURFACE_KINDS:
        raise ConfigError(f"{where}.kind must be one of {', '.join(SURFACE_KINDS)}, got {kind!r}")
    items: Any = spec.get("items")
    try:
        check_items(items)
    except ConfigError as exc:
        raise within(where, exc) from exc
    algorithm = spec.get("algorithm", "dqn" if kind == "agent" else None)
    if not isinstance(algorithm, str):
        raise ConfigError(f"{where}.algorithm must be a string")
    agent = None
    if kind == "agent":
        if "params" in spec:
            raise ConfigError(f"{where}.params: an agent surface's learner takes its params from {where}.agent.params")
        if "agent" in spec and not isinstance(spec["agent"], Mapping):
            raise ConfigError(f"{where}.agent must be a table")
        agent = AgentSpec.from_dict(spec.get("agent", {}), f"{where}.agent", algorithm)
        policy_config = config_from_dict(ACTION_VALUES)
    elif "agent" in spec:
        raise ConfigError(f'{where}.agent: only an agent surface (kind = "agent") has an agent table')
    else:
        try:
            policy_config = config_from_dict(algorithm, dict(spec.get("params", {})))
        except ConfigError as exc:
            raise ConfigError(f"{where}.params: {exc}") from exc
    features = FeatureSchema.from_dict(spec.get("features", {}), f"{where}.features")
    realtime = realtime or RealtimeFeatures()
    reward = RewardConfig.from_dict(spec.get("reward", {}), f"{where}.reward")
    try:
        cold_start = _cold_start(spec.get("cold_start", {}))
        item_features = _item_features(spec.get("item_features"), items)
        return SurfaceConfig(
            name,
            policy_config,
            tuple(items),
            features=features,
            cold_start=cold_start,
            item_features=item_features,
            reward=reward,
            realtime=realtime if features.realtime else None,
            kind=kind,
            agent=agent,
        )
    except ConfigError as exc:
        raise within(where, exc) from exc


def _cold_start(spec: Mapping[str, Any]) -> ColdStart:
    reject_unknown(
        "cold_start",
        spec,
        {"strength", "segment_strength", "segment_feature", "segments", "max_segments", "explore_first"},
    )
    try:
        return ColdStart(**spec)
    except ConfigError as exc:
        raise within("cold_start", exc) from exc


def _item_features(spec: Any, items: list[str]) -> tuple[tuple[float, ...], ...] | None:
    """``[surfaces.<name>.item_features]``: a table item id -> list of numbers, for every item."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or set(spec) != set(items):
        raise ConfigError("item_features must give a vector for every item of the catalogue, and no other")
    rows = [spec[item] for item in items]
    check_item_feature_rows(items, rows)
    return tuple(tuple(float(v) for v in row) for row in rows)
