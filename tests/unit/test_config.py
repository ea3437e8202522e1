"""Configuration validation, rewards and experiment assignment (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from rewardloop.workers.config import ConfigError, ServiceConfig
from rewardloop.workers.experiments import assign

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
    other_reward = ServiceConfig.from_dict({"surfaces": {"s": {**OK_SURFACE, "reward": {"default_reward": 0.1}}}})
    fingerprints = {base, more_items.surfaces["s"].fingerprint, other_c.surfaces["s"].fingerprint}
    assert len(fingerprints | {other_reward.surfaces["s"].fingerprint}) == 4


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
