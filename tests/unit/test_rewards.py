"""Reward engine: the signal catalogue (validation and default transforms) and per-surface reward config.

Fusion, decay and quality have their own files (test_rewards_*.py); the end-to-end replay
acceptance test is in test_rewards_replay.py.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest

from rewardloop.learning.rewards import (
    SIGNALS,
    Aggregate,
    ConfigError,
    LateRule,
    Polarity,
    RewardConfig,
    Signal,
    SignalRule,
    Transform,
    check_value,
    parse_signal,
)
from rewardloop.v1 import feedback_pb2

# --- the catalogue, written out by hand: (signal, low, high, integral, polarity, aggregate) -------------------------

CATALOGUE = [
    (Signal.CLICK, 0.0, 1.0, True, Polarity.POSITIVE, Aggregate.MAX),
    (Signal.DWELL, 0.0, 86_400.0, False, Polarity.POSITIVE, Aggregate.MAX),
    (Signal.RATING, 1.0, 5.0, False, Polarity.POSITIVE, Aggregate.LATEST),
    (Signal.LIKE, 0.0, 1.0, True, Polarity.POSITIVE, Aggregate.LATEST),
    (Signal.IMPRESSION, 0.0, 1.0, True, Polarity.NEUTRAL, Aggregate.MAX),
    (Signal.COMPLETION, 0.0, 1.0, False, Polarity.POSITIVE, Aggregate.MAX),
    (Signal.DISLIKE, 0.0, 1.0, True, Polarity.NEGATIVE, Aggregate.LATEST),
    (Signal.SHARE, 0.0, 1.0, True, Polarity.POSITIVE, Aggregate.MAX),
    (Signal.COMMENT, 0.0, 1.0, True, Polarity.POSITIVE, Aggregate.MAX),
    (Signal.BOOKMARK, 0.0, 1.0, True, Polarity.POSITIVE, Aggregate.LATEST),
    (Signal.PURCHASE, 0.0, 1e6, False, Polarity.POSITIVE, Aggregate.SUM),
    (Signal.SKIP, 0.0, 1.0, True, Polarity.NEGATIVE, Aggregate.MAX),
    (Signal.HIDE, 0.0, 1.0, True, Polarity.NEGATIVE, Aggregate.MAX),
    (Signal.REPORT, 0.0, 1.0, True, Polarity.NEGATIVE, Aggregate.MAX),
    (Signal.SESSION_END, 0.0, 1.0, True, Polarity.NEUTRAL, Aggregate.MAX),
]


def test_catalogue_covers_every_signal_and_keeps_the_proto_numbers() -> None:
    assert len(Signal) >= 13
    assert {row[0] for row in CATALOGUE} == set(Signal) == set(SIGNALS)
    proto = {name.removeprefix("SIGNAL_"): number for name, number in feedback_pb2.Signal.items() if number}
    assert proto == {s.name: int(s) for s in Signal}
    for signal, low, high, integral, polarity, aggregate in CATALOGUE:
        spec = SIGNALS[signal]
        assert (spec.low, spec.high, spec.integral, spec.polarity, spec.aggregate) == (
            low,
            high,
            integral,
            polarity,
            aggregate,
        ), signal
        assert spec.unit, signal


def _validation_cases() -> list[tuple[Signal, float, str | None]]:
    """(signal, value, pattern of the message or None when valid) for every signal."""
    cases: list[tuple[Signal, float, str | None]] = []
    for signal, low, high, integral, _, _ in CATALOGUE:
        name = signal.name.lower()
        shape = r"0 or 1 \(.*\)" if integral else rf".* in \[{low:.15g}, {high:.15g}\]"
        cases += [
            (signal, low, None),
            (signal, high, None),
            (signal, low - 1.0, rf"{name} value must be {shape}, got {low - 1.0}"),
            (signal, high + 1.0, rf"{name} value must be {shape}, got {high + 1.0}"),
            (signal, math.nan, f"{name} value must be finite, got nan"),
            (signal, math.inf, f"{name} value must be finite, got inf"),
            (signal, -math.inf, f"{name} value must be finite, got -inf"),
        ]
        middle = (low + high) / 2 if not integral else 0.5
        cases.append((signal, middle, rf"{name} value must be {shape}, got 0.5" if integral else None))
    return cases


@pytest.mark.parametrize(("signal", "value", "message"), _validation_cases())
def test_signal_validation(signal: Signal, value: float, message: str | None) -> None:
    problem = check_value(signal, value)
    if message is None:
        assert problem is None
    else:
        assert problem is not None and re.fullmatch(message, problem), problem


# (signal, value, default transform's output), computed by hand.
DEFAULT_TRANSFORMS = [
    (Signal.IMPRESSION, 1.0, 1.0),
    (Signal.CLICK, 0.0, 0.0),
    (Signal.CLICK, 1.0, 1.0),
    (Signal.DWELL, 0.0, 0.0),
    (Signal.DWELL, 15.0, 0.5),
    (Signal.DWELL, 30.0, 1.0),
    (Signal.DWELL, 3_600.0, 1.0),
    (Signal.RATING, 1.0, 0.0),
    (Signal.RATING, 3.0, 0.5),
    (Signal.RATING, 4.5, 0.875),
    (Signal.RATING, 5.0, 1.0),
    (Signal.LIKE, 0.0, 0.0),
    (Signal.LIKE, 1.0, 1.0),
    (Signal.COMPLETION, 0.25, 0.25),
    (Signal.COMPLETION, 1.0, 1.0),
    (Signal.DISLIKE, 1.0, 1.0),
    (Signal.SHARE, 1.0, 1.0),
    (Signal.COMMENT, 1.0, 1.0),
    (Signal.BOOKMARK, 1.0, 1.0),
    (Signal.BOOKMARK, 0.0, 0.0),
    (Signal.PURCHASE, 0.0, 0.0),
    (Signal.PURCHASE, 10.0, math.log(11) / math.log(101)),
    (Signal.PURCHASE, 100.0, 1.0),
    (Signal.PURCHASE, 5_000.0, 1.0),
    (Signal.SKIP, 1.0, 1.0),
    (Signal.HIDE, 1.0, 1.0),
    (Signal.REPORT, 1.0, 1.0),
    (Signal.SESSION_END, 0.0, 0.0),
    (Signal.SESSION_END, 1.0, 1.0),
]


def test_every_signal_has_a_default_transform_row() -> None:
    assert {row[0] for row in DEFAULT_TRANSFORMS} == set(Signal)


@pytest.mark.parametrize(("signal", "value", "expected"), DEFAULT_TRANSFORMS)
def test_default_transforms(signal: Signal, value: float, expected: float) -> None:
    assert check_value(signal, value) is None
    assert SIGNALS[signal].transform(value) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(
    ("transform", "value", "expected"),
    [
        (Transform("linear"), 0.3, 0.3),
        (Transform("linear", scale=2.0, offset=3.0), 4.0, 0.5),
        (Transform("linear", scale=2.0, offset=3.0), 1.0, -1.0),
        (Transform("saturate", scale=60.0), 30.0, 0.5),
        (Transform("saturate", scale=60.0), 600.0, 1.0),
        (Transform("log1p", scale=9.0), 0.0, 0.0),
        (Transform("log1p", scale=9.0), 3.0, math.log(4) / math.log(10)),
        (Transform("log1p", scale=9.0), 9.0, 1.0),
        (Transform("log1p", scale=9.0), 1e6, 1.0),
        (Transform("threshold", at=0.9), 0.9, 1.0),
        (Transform("threshold", at=0.9), 0.8999, 0.0),
    ],
)
def test_transform_kinds(transform: Transform, value: float, expected: float) -> None:
    assert transform(value) == pytest.approx(expected, abs=1e-15)


def test_parse_signal() -> None:
    assert parse_signal(12) is Signal.SKIP
    assert parse_signal(15) is Signal.SESSION_END
    for bad in (0, 16, -1):
        with pytest.raises(ValueError, match=rf"signal must be one of 1\.\.15, got {bad}"):
            parse_signal(bad)


def test_session_end_is_a_neutral_zero_weight_binary_signal() -> None:
    spec = SIGNALS[Signal.SESSION_END]
    assert (int(Signal.SESSION_END), Signal.SESSION_END.key) == (15, "session_end")
    assert feedback_pb2.SIGNAL_SESSION_END == 15
    assert (spec.polarity, spec.aggregate, spec.default_weight) == (Polarity.NEUTRAL, Aggregate.MAX, 0.0)
    assert RewardConfig().rule(Signal.SESSION_END).weight == 0.0
    assert RewardConfig().rule(Signal.SESSION_END).contribution(1.0) == 0.0
    assert check_value(Signal.SESSION_END, 1.0) is None and check_value(Signal.SESSION_END, 0.0) is None
    assert check_value(Signal.SESSION_END, 0.5) == "session_end value must be 0 or 1 (1 = session ended), got 0.5"
    # Neutral: a surface may weigh it either way.
    assert SignalRule(Signal.SESSION_END, -0.2, Transform("linear")).weight == -0.2
    assert SignalRule(Signal.SESSION_END, 0.2, Transform("linear")).weight == 0.2


def test_a_signal_added_later_is_left_out_of_the_config_table_at_its_default() -> None:
    # Surface fingerprints hash to_dict(): a new signal at its default must not change them.
    assert "session_end" not in RewardConfig().to_dict()["signals"]
    assert "session_end" not in RewardConfig.from_dict({"signals": {"session_end": {"weight": 0}}}).to_dict()["signals"]
    weighted = RewardConfig.from_dict({"signals": {"session_end": {"weight": -0.1}}})
    assert weighted.to_dict()["signals"]["session_end"]["weight"] == -0.1
    for config in (RewardConfig(), weighted):
        assert RewardConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# --- config ---------------------------------------------------------------------------------------------------------


def test_defaults_serve_a_click_only_caller() -> None:
    config = RewardConfig.from_dict({})
    assert config == RewardConfig()
    assert config.rule(Signal.CLICK).contribution(1.0) == 1.0
    assert config.rule(Signal.CLICK).contribution(0.0) == 0.0
    assert (config.window_seconds, config.default_reward, config.late_rule) == (3600.0, 0.0, LateRule.APPLY)
    assert config.half_life_seconds is None
    assert config.rule(Signal.IMPRESSION).weight == 0.0
    assert {s for s in Signal if config.rule(s).weight < 0} == {
        Signal.DISLIKE,
        Signal.SKIP,
        Signal.HIDE,
        Signal.REPORT,
    }


def test_a_full_config_loads_and_round_trips() -> None:
    raw = {
        "window_seconds": 600,
        "default_reward": 0.1,
        "late_rule": "ignore_for_training",
        "half_life_seconds": 86_400,
        "signals": {
            "dwell": {"weight": 0.5, "transform": "saturate", "scale": 60},
            "purchase": {"weight": 2, "transform": "linear", "scale": 50, "cap": 0.5},
            "completion": {"transform": "threshold", "at": 0.9},
            "skip": {"weight": -0.3},
            "impression": {"weight": -0.01},
            "rating": {"offset": 3, "scale": 2},
        },
    }
    config = RewardConfig.from_dict(raw, where="surfaces.home.reward")
    assert config.late_rule is LateRule.IGNORE_FOR_TRAINING and config.window_ms == 600_000
    assert config.rule(Signal.DWELL).contribution(30.0) == 0.25
    assert config.rule(Signal.PURCHASE).contribution(500.0) == 1.0  # 2 * min(10, cap 0.5)
    assert config.rule(Signal.COMPLETION).contribution(0.95) == 1.0
    assert config.rule(Signal.RATING).contribution(1.0) == -1.0
    assert config.rule(Signal.CLICK) == RewardConfig().rule(Signal.CLICK)  # unlisted: catalogue default
    again = RewardConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and hash(again) == hash(config)


def _reward(**raw: Any) -> dict[str, Any]:
    return raw


W = "surfaces.s.reward"
BAD_CONFIGS = [
    ("not a table", rf"{W} must be a table"),
    (_reward(windows=1), rf"{W}: unknown key\(s\) windows; known: default_reward, half_life_seconds, late_rule"),
    (_reward(signals=[]), rf"{W}.signals must be a table of signal name -> rule"),
    (_reward(signals={"clik": {}}), rf"{W}.signals: unknown signal 'clik'; known: click, dwell"),
    (_reward(signals={"click": 1.0}), rf"{W}.signals.click must be a table"),
    (_reward(signals={"click": {"wieght": 1}}), rf"{W}.signals.click: unknown key\(s\) wieght"),
    (_reward(signals={"click": {"weight": -1}}), rf"{W}.signals.click.weight must be >= 0 \(click is a positive"),
    (_reward(signals={"hide": {"weight": 1}}), rf"{W}.signals.hide.weight must be <= 0 \(hide is a negative"),
    (_reward(signals={"click": {"weight": "1"}}), rf"{W}.signals.click.weight must be a finite number, got '1'"),
    (_reward(signals={"click": {"weight": math.nan}}), rf"{W}.signals.click.weight must be a finite number"),
    (_reward(signals={"dwell": {"transform": "sqrt"}}), rf"{W}.signals.dwell.transform must be one of linear, satu"),
    (_reward(signals={"dwell": {"scale": 0}}), rf"{W}.signals.dwell.scale must be > 0, got 0"),
    (_reward(signals={"dwell": {"at": 5}}), rf"{W}.signals.dwell.at does not apply to transform 'saturate'"),
    (
        _reward(signals={"purchase": {"transform": "saturate"}}),
        rf"{W}.signals.purchase.scale is required for transform 'saturate'",
    ),
    (
        _reward(signals={"completion": {"transform": "threshold"}}),
        rf"{W}.signals.completion.at is required for transform 'threshold'",
    ),
    (_reward(signals={"rating": {"offset": math.inf}}), rf"{W}.signals.rating.offset must be a finite number"),
    (_reward(signals={"click": {"cap": 0}}), rf"{W}.signals.click.cap must be > 0, got 0"),
    (_reward(window_seconds=0), rf"{W}.window_seconds must be in \(0, 604800\], got 0"),
    (_reward(window_seconds=-5), rf"{W}.window_seconds must be in \(0, 604800\], got -5"),
    (_reward(window_seconds=700_000), rf"{W}.window_seconds must be in \(0, 604800\], got 700000"),
    (_reward(window_seconds="1h"), rf"{W}.window_seconds must be a real number, got '1h'"),
    (_reward(default_reward=1.5), rf"{W}.default_reward must be in \[0, 1\], got 1.5"),
    (_reward(late_rule="drop"), rf"{W}.late_rule must be one of 'apply', 'ignore_for_training', got 'drop'"),
    (_reward(half_life_seconds=0), rf"{W}.half_life_seconds must be a finite number >= 1 \(omit it for no decay\)"),
    (_reward(half_life_seconds=-3600), rf"{W}.half_life_seconds must be a finite number >= 1"),
    (_reward(half_life_seconds=math.inf), rf"{W}.half_life_seconds must be a finite number >= 1"),
    (_reward(half_life_seconds=True), rf"{W}.half_life_seconds must be a finite number >= 1"),
]


@pytest.mark.parametrize(("raw", "message"), BAD_CONFIGS)
def test_bad_configs_name_the_key(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}"):
        RewardConfig.from_dict(raw, where=W)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError, match=r"^window_seconds must be in \(0, 604800\]"):
        RewardConfig(window_seconds=0)
    with pytest.raises(ConfigError, match=r"^rules\[click\] is the rule of like"):
        RewardConfig(rules={Signal.CLICK: SignalRule(Signal.LIKE, 1.0, Transform("linear"))})
    with pytest.raises(ConfigError, match=r"^weight must be <= 0 \(skip is a negative signal\), got 0.5"):
        SignalRule(Signal.SKIP, 0.5, Transform("linear"))
    assert SignalRule(Signal.IMPRESSION, -0.5, Transform("linear")).weight == -0.5  # neutral: either sign


def test_config_is_immutable() -> None:
    config = RewardConfig()
    with pytest.raises(TypeError):
        config.rules[Signal.CLICK] = SignalRule(Signal.CLICK, 0.0, Transform("linear"))  # type: ignore[index]
    with pytest.raises(AttributeError):
        config.window_seconds = 5.0  # type: ignore[misc]
