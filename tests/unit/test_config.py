"""Configuration validation, rewards and experiment assignment (pure)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from rewardloop.workers.config import ConfigError, ServiceConfig
from rewardloop.workers.experiments import assign
from rewardloop.workers.reward import Signal, check_value, reward_for

OK_SURFACE = {"algorithm": "ucb1", "items": ["a", "b"]}


def _cfg(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"surfaces": {"s": dict(OK_SURFACE)}}
    raw.update(overrides)
    return raw


BAD_CONFIGS = [
    ({"surfaces": {}}, "at least one surface"),
    (_cfg(service={"shards": 0}), r"service.shards must be an integer in \[1, 256\], got 0"),
    (_cfg(service={"color": 1}), "service: unknown key"),
    ({"surfaces": {"s": {**OK_SURFACE, "items": []}}}, "surfaces.s.items must be a non-empty list"),
    ({"surfaces": {"s": {**OK_SURFACE, "items": ["a", "a"]}}}, "duplicate item id 'a'"),
    ({"surfaces": {"s": {**OK_SURFACE, "algorithm": "nope"}}}, "surfaces.s.params: unknown algorithm 'nope'"),
    ({"surfaces": {"s": {**OK_SURFACE, "params": {"c": -1}}}}, r"surfaces.s.params: c must be > 0, got -1"),
    ({"surfaces": {"bad name": OK_SURFACE}}, "must be 1..64 characters"),
    (_cfg(experiments={"e": {"variants": {"a": 1}}}), "at least two variant"),
    (
        _cfg(experiments={"e": {"variants": {"a": 1, "b": 0}}}),
        "experiments.e.variants.b must be a weight > 0",
    ),
    (_cfg(experiments={"e": {"variants": {"a": 1, "b": 1}, "traffic": 1.5}}), r"traffic must be in \(0, 1\]"),
    (_cfg(experiments={"e": {"variants": {"a": 1, "b": 1}, "surfaces": ["x"]}}), "unknown surface 'x'"),
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
    other_c = ServiceConfig.from_dict({"surfaces": {"s": {**OK_SURFACE, "params": {"c": 0.5}}}})
    assert len({base, more_items.surfaces["s"].fingerprint, other_c.surfaces["s"].fingerprint}) == 3


REWARDS = [
    (Signal.CLICK, 1.0, 1.0),
    (Signal.CLICK, 0.0, 0.0),
    (Signal.DWELL, 0.0, 0.0),
    (Signal.DWELL, 15.0, 0.5),
    (Signal.DWELL, 3600.0, 1.0),
    (Signal.RATING, 1.0, 0.0),
    (Signal.RATING, 3.0, 0.5),
    (Signal.RATING, 5.0, 1.0),
    (Signal.LIKE, 1.0, 1.0),
]


@pytest.mark.parametrize(("signal", "value", "reward"), REWARDS)
def test_reward_transforms(signal: Signal, value: float, reward: float) -> None:
    assert check_value(signal, value) is None
    assert reward_for(signal, value) == reward


@pytest.mark.parametrize(
    ("signal", "value", "message"),
    [
        (Signal.CLICK, 0.5, "click value must be 0 or 1"),
        (Signal.DWELL, -0.1, r"dwell value must be seconds in \[0, 86400\]"),
        (Signal.DWELL, 86_401.0, r"dwell value must be seconds in \[0, 86400\]"),
        (Signal.DWELL, math.inf, "dwell value must be finite"),
        (Signal.RATING, 0.0, r"rating value must be stars in \[1, 5\]"),
        (Signal.LIKE, 2.0, "like value must be 0 or 1"),
    ],
)
def test_bad_signal_values(signal: Signal, value: float, message: str) -> None:
    problem = check_value(signal, value)
    assert problem is not None and __import__("re").match(message, problem)


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
