"""Configuration validation, rewards and experiment assignment (pure)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from rewardloop.learning.bandits import config_from_dict
from rewardloop.learning.experiments import ExperimentConfig, assign
from rewardloop.learning.features import FeatureSchema
from rewardloop.learning.params import ConfigError
from rewardloop.learning.surface import ColdStart, SurfaceConfig
from rewardloop.workers.config import ServiceConfig

OK_SURFACE = {"algorithm": "ucb1", "items": ["a", "b"]}


def _cfg(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"surfaces": {"s": dict(OK_SURFACE)}}
    raw.update(overrides)
    return raw


BAD_CONFIGS = [
    ({"surfaces": {}}, "at least one surface"),
    (_cfg(service={"shards": 0}), r"service.shards must be an integer in \[1, 256\], got 0"),
    (_cfg(service={"color": 1}), "service: unknown key"),
    (_cfg(service={"segment_fit_seconds": -1}), r"service.segment_fit_seconds must be an integer in \[0, 86400\]"),
    ({"surfaces": {"s": {**OK_SURFACE, "cold_start": {"max_segments": 99}}}}, r"cold_start.max_segments must be"),
    ({"surfaces": {"s": {**OK_SURFACE, "items": []}}}, "surfaces.s.items must be a non-empty list"),
    ({"surfaces": {"s": {**OK_SURFACE, "items": ["a", "a"]}}}, "duplicate item id 'a'"),
    ({"surfaces": {"s": {**OK_SURFACE, "algorithm": "nope"}}}, "surfaces.s.params: unknown algorithm 'nope'"),
    ({"surfaces": {"s": {**OK_SURFACE, "params": {"c": -1}}}}, r"surfaces.s.params: c must be > 0, got -1"),
    ({"surfaces": {"bad name": OK_SURFACE}}, "must be 1..64 characters"),
    ({"surfaces": {"s": {**OK_SURFACE, "kind": "robot"}}}, "surfaces.s.kind must be one of bandit, agent, got 'robot'"),
    ({"surfaces": {"s": {**OK_SURFACE, "agent": {}}}}, "surfaces.s.agent: only an agent surface"),
    ({"surfaces": {"s": {"kind": "agent", "items": ["a"], "params": {}}}}, "surfaces.s.params: an agent surface's"),
    ({"surfaces": {"s": {"kind": "agent", "items": ["a"], "algorithm": "q_learning"}}}, "surfaces.s.agent.algorithm"),
    ({"surfaces": {"s": {"kind": "agent", "items": ["a"], "agent": {"params": {"lr": 1}}}}}, "unknown key.*lr"),
    (
        {"surfaces": {"s": {"kind": "agent", "items": ["a"], "agent": {"params": {"gamma": 2}}}}},
        r"surfaces.s.agent.params.gamma must be in",
    ),
    ({"surfaces": {"s": {"kind": "agent", "items": ["a"], "agent": {"replicas": 0}}}}, r"surfaces.s.agent.replicas"),
    (
        {"surfaces": {"s": {"kind": "agent", "items": ["a"], "agent": {"idle_timeout_seconds": "x"}}}},
        "surfaces.s.agent.idle_timeout_seconds must be a number",
    ),
    (_cfg(experiments={"e": {"variants": {"a": 1}}}), "at least two variant"),
    (
        _cfg(experiments={"e": {"variants": {"a": 1, "b": 0}}}),
        "experiments.e.variants.b must be a weight > 0",
    ),
    (_cfg(experiments={"e": {"variants": {"a": 1, "b": 1}, "traffic": 1.5}}), r"traffic must be in \(0, 1\]"),
    (_cfg(experiments={"e": {"variants": {"a": 1, "b": 1}, "surfaces": ["x"]}}), "unknown surface 'x'"),
    (
        {
            "surfaces": {
                "s": {
                    **OK_SURFACE,
                    "algorithm": "sliding_window_ucb",
                    "params": {},
                    "reward": {"half_life_seconds": 60},
                }
            }
        },
        r"surfaces.s.reward.half_life_seconds: sliding_window_ucb forgets per update already",
    ),
    (
        {"surfaces": {"s": {**OK_SURFACE, "features": {"realtime": ["feedback_1h"]}}}},
        r"surfaces.s.features.realtime: ucb1 ignores context; choose a contextual algorithm",
    ),
    (
        {"surfaces": {"s": {**OK_SURFACE, "algorithm": "linucb", "params": {}, "features": {"realtime": ["x_1h"]}}}},
        r"surfaces.s.features.realtime: unknown feature 'x_1h' \(service.realtime has decisions_1h, feedback_1h",
    ),
    (_cfg(service={"realtime": {"windows_ms": [60_000, 1_000]}}), r"service.realtime.windows_ms must be strictly"),
    (_cfg(service={"realtime": {"horizon": 1}}), r"service.realtime: unknown key\(s\) horizon"),
    (_cfg(service={"retention": {"logs": 1}}), r"service.retention: unknown key\(s\) logs"),
    (_cfg(service={"retention": {"logs_seconds": 0}}), r"service.retention.logs_seconds must be an integer in \[1,"),
    (
        _cfg(service={"retention": {"logs_seconds": 600, "user_state_seconds": 60}}),
        r"service.retention.user_state_seconds must be >= logs_seconds \(600\), got 60",
    ),
    (
        {
            "service": {"retention": {"logs_seconds": 60}},
            "surfaces": {
                "s": {**OK_SURFACE, "algorithm": "linucb", "params": {}, "features": {"realtime": ["feedback_1h"]}}
            },
        },
        r"service.retention.logs_seconds must cover the real-time horizon",
    ),
]


@pytest.mark.parametrize(("raw", "message"), BAD_CONFIGS)
def test_bad_configs_name_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServiceConfig.from_dict(raw)


def test_default_config_loads() -> None:
    config = ServiceConfig.load()
    assert {"home_feed", "home_feed_ucb", "home_feed_egreedy"} <= set(config.surfaces)


def test_fingerprint_changes_with_catalogue_and_params() -> None:
    base = ServiceConfig.from_dict(_cfg()).surfaces["s"].fingerprint
    more_items = ServiceConfig.from_dict({"surfaces": {"s": {**OK_SURFACE, "items": ["a", "b", "c"]}}})
    other_prior = ServiceConfig.from_dict(
        {"surfaces": {"s": {**OK_SURFACE, "algorithm": "thompson", "params": {"prior_alpha": 2.0}}}}
    )
    thompson = ServiceConfig.from_dict({"surfaces": {"s": {**OK_SURFACE, "algorithm": "thompson"}}})
    other_reward = ServiceConfig.from_dict({"surfaces": {"s": {**OK_SURFACE, "reward": {"default_reward": 0.1}}}})
    others = [more_items, other_prior, thompson, other_reward]
    assert len({base} | {config.surfaces["s"].fingerprint for config in others}) == 5


def test_fingerprint_leaves_out_what_only_steers_choices() -> None:
    # UCB1's bonus does not change what its counts mean: tuning it keeps the users' learned states.
    base = ServiceConfig.from_dict(_cfg()).surfaces["s"]
    for params in ({"c": 0.5}, {"tuned": False}, {"c": 2.0, "tuned": True}):
        other = ServiceConfig.from_dict({"surfaces": {"s": {**OK_SURFACE, "params": params}}}).surfaces["s"]
        assert other.policy_config != base.policy_config and other.fingerprint == base.fingerprint


def test_reward_config_errors_name_the_surface_key() -> None:
    spec = {**OK_SURFACE, "reward": {"signals": {"dwell": {"weight": 1, "at": 3}}}}
    with pytest.raises(ConfigError, match=r"^surfaces\.s\.reward\.signals\.dwell\.at does not apply"):
        ServiceConfig.from_dict({"surfaces": {"s": spec}})


def test_assignment_follows_weights_and_traffic() -> None:
    config = ServiceConfig.from_dict(
        _cfg(experiments={"e": {"variants": {"a": 1, "b": 3}, "traffic": 0.5, "salt": "s1"}})
    )
    experiment = config.experiments["e"]
    variants = [assign(experiment, f"user-{k}") for k in range(8000)]
    inside = [v for v in variants if v is not None]
    assert abs(len(inside) / len(variants) - 0.5) < 0.03
    assert abs(inside.count("b") / len(inside) - 0.75) < 0.03
    resalted = ServiceConfig.from_dict(
        _cfg(experiments={"e": {"variants": {"a": 1, "b": 3}, "traffic": 0.5, "salt": "s2"}})
    ).experiments["e"]
    moved = sum(assign(resalted, f"user-{k}") != v for k, v in enumerate(variants))
    assert moved > 2000  # a new salt re-randomises


def test_realtime_features_extend_the_vector_and_the_fingerprint() -> None:
    surface = {**OK_SURFACE, "algorithm": "linucb", "params": {}, "features": {"numeric": ["x"]}}
    plain = ServiceConfig.from_dict({"surfaces": {"s": surface}}).surfaces["s"]
    with_rt = {**surface, "features": {"numeric": ["x"], "realtime": ["feedback_1h", "since_positive"]}}
    realtime = ServiceConfig.from_dict({"surfaces": {"s": with_rt}}).surfaces["s"]
    assert realtime.features.names == ("bias", "x", "rt:feedback_1h", "rt:since_positive")
    assert (plain.context_dim, realtime.context_dim) == (2, 4) and plain.realtime is None
    assert realtime.fingerprint != plain.fingerprint
    other_windows = {"service": {"realtime": {"windows_ms": [3_600_000, 2 * 86_400_000]}}, "surfaces": {"s": with_rt}}
    assert ServiceConfig.from_dict(other_windows).surfaces["s"].fingerprint != realtime.fingerprint


def test_a_surface_is_a_bandit_unless_it_says_otherwise_and_kind_keeps_bandit_fingerprints() -> None:
    plain = ServiceConfig.from_dict(_cfg()).surfaces["s"]
    explicit = ServiceConfig.from_dict({"surfaces": {"s": {**OK_SURFACE, "kind": "bandit"}}}).surfaces["s"]
    assert plain.kind == explicit.kind == "bandit"
    assert plain.fingerprint == explicit.fingerprint
    with pytest.raises(ConfigError, match="kind must be one of bandit"):
        dataclasses.replace(plain, kind="robot")


def _ucb() -> Any:
    return config_from_dict("ucb1")


DIRECT_CONSTRUCTION = [
    (lambda: ColdStart(strength=-1), r"strength must be a number in \[0, 1e6\), got -1"),
    (lambda: ColdStart(segment_strength=1e6), "segment_strength must be a number"),
    (lambda: SurfaceConfig("s", _ucb(), ("a", "a")), "items: duplicate item id 'a'"),
    (lambda: SurfaceConfig("s", _ucb(), ()), "items must be a non-empty list of item ids"),
    (lambda: SurfaceConfig("bad name", _ucb(), ("a",)), "must be 1..64 characters"),
    (lambda: SurfaceConfig("s", _ucb(), ("a",), kind="robot"), "kind must be one of bandit, agent, got 'robot'"),
    (
        lambda: SurfaceConfig("s", _ucb(), ("a",), cold_start=ColdStart(segment_feature="os")),
        "cold_start.segment_feature must name a categorical feature, got 'os'",
    ),
    (lambda: SurfaceConfig("s", _ucb(), ("a", "b"), item_features=((1.0,), ())), "item_features.b must be a list"),
    (
        lambda: SurfaceConfig("s", _ucb(), ("a",), features=FeatureSchema(realtime=("feedback_1h",))),
        "features.realtime: ucb1 ignores context",
    ),
    (lambda: ExperimentConfig("e", (("a", 1.0), ("b", 1.0)), "salt", 1.5, ()), r"traffic must be in \(0, 1\]"),
    (lambda: ExperimentConfig("e", (("a", 1.0),), "salt", 1.0, ()), "variants must map at least two"),
    (lambda: ExperimentConfig("e", (("a", 1.0), ("b", 0)), "salt", 1.0, ()), "variants.b must be a weight > 0"),
    (lambda: FeatureSchema(numeric=("x", "x")), "a feature is declared twice"),
    (lambda: FeatureSchema(optional=(("x", float("nan")),)), "optional.x must be a finite number"),
    (lambda: FeatureSchema(categorical=(("os", ("ios", "ios")),)), "categorical.os has duplicate categories"),
    (lambda: ServiceConfig(surfaces={}, experiments={}), "at least one surface"),
    (
        lambda: ServiceConfig(surfaces={"s": SurfaceConfig("s", _ucb(), ("a",))}, experiments={}, shards=0),
        r"service.shards must be an integer in \[1, 256\], got 0",
    ),
    (
        lambda: ServiceConfig(
            surfaces={"s": SurfaceConfig("s", _ucb(), ("a",))},
            experiments={"e": ExperimentConfig("e", (("a", 1.0), ("b", 1.0)), "salt", 1.0, ("t",))},
        ),
        "experiments.e.surfaces: unknown surface 't'",
    ),
]


@pytest.mark.parametrize(("build", "message"), DIRECT_CONSTRUCTION)
def test_a_config_built_directly_checks_itself_like_a_loaded_one(build: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build()


def test_a_surface_computes_its_index_and_loads_to_the_same_value_as_built() -> None:
    loaded = ServiceConfig.from_dict(_cfg()).surfaces["s"]
    built = SurfaceConfig("s", _ucb(), ("a", "b"))
    assert built == loaded and dict(built.index) == {"a": 0, "b": 1} and built.fingerprint == loaded.fingerprint
    assert ColdStart(strength=3).strength == 3.0 and isinstance(ColdStart(strength=3).strength, float)
