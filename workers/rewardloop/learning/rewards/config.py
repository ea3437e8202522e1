"""Per-surface reward config: how much each signal matters, its transform and cap, the reward window.

Read from a surface's ``reward`` table and validated on load; every error names the key, e.g.
``surfaces.home.reward.signals.skip.weight must be <= 0 (skip is a negative signal), got 0.5``.
Every key is optional: the defaults give a click-only caller reward 1 for a click and 0 for
``click = 0``, and any single-signal caller the reward ``reward.py`` gave it.

.. code-block:: toml

    [surfaces.home.reward]
    window_seconds = 3600          # reward window per decision, (0, 604800]
    default_reward = 0.0           # reward of a decision with no feedback in its window, [0, 1]
    late_rule = "apply"            # or "ignore_for_training" (see fusion.py)
    half_life_seconds = 604800     # evidence halves every week (see decay.py); omit: no decay

    [surfaces.home.reward.signals]
    dwell = { weight = 0.5, transform = "saturate", scale = 60 }
    purchase = { weight = 2.0, cap = 0.5 }     # log1p (the default transform), at most 2 * 0.5
    completion = { transform = "threshold", at = 0.9 }
    skip = { weight = -0.3 }
    impression = { weight = 0 }                # recorded, never moves the reward

Per signal (unlisted signals keep their catalogue default, see ``signals.py``):

- ``weight``: factor of the signal's transformed value. Its sign must agree with the signal's polarity
  (>= 0 for positive signals, <= 0 for negative ones, either for neutral ones): transforms measure
  *how much*, the weight says *which way*, so a mistyped sign fails on load. 0 turns a signal off.
- ``transform``: ``linear`` (``scale``, ``offset``; default the signal's range onto [0, 1]),
  ``saturate`` (``scale``), ``log1p`` (``scale``), ``threshold`` (``at``). Choosing a kind other than
  the signal's default requires its parameters (except linear's).
- ``cap``: upper bound of the transformed value before weighting, > 0, default 1: a signal adds at
  most ``weight * cap`` (e.g. a linear purchase transform cannot run away).

>>> config = RewardConfig.from_dict({"signals": {"dwell": {"weight": 0.5, "scale": 60}}}, where="surfaces.s.reward")
>>> config.rule(Signal.DWELL).contribution(30.0), config.rule(Signal.CLICK).contribution(1.0)
(0.25, 1.0)
>>> try:
...     RewardConfig.from_dict({"signals": {"skip": {"weight": 0.5}}}, where="surfaces.s.reward")
... except ConfigError as exc:
...     print(exc)
surfaces.s.reward.signals.skip.weight must be <= 0 (skip is a negative signal), got 0.5
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from rewardloop.learning.params import ConfigError, in_interval, positive, reject_unknown, unit_interval, within
from rewardloop.learning.rewards.signals import BY_KEY, SIGNALS, Polarity, Signal, Transform

# Events more than 7 days old are flagged by quality.py (feedback.proto keeps idempotency keys 7 days):
# a longer window could never be filled by events that train.
MAX_WINDOW_SECONDS = 7 * 86_400.0
# Timestamps are in ms from the callers' clocks; a sub-second half-life would decay on clock jitter.
MIN_HALF_LIFE_SECONDS = 1.0
TRANSFORM_PARAMS: dict[str, tuple[str, ...]] = {
    "linear": ("scale", "offset"),
    "saturate": ("scale",),
    "log1p": ("scale",),
    "threshold": ("at",),
}
SIGNAL_KEYS = {"weight", "transform", "scale", "offset", "at", "cap"}
# Signals added after surface fingerprints were pinned (``SurfaceConfig.fingerprint`` hashes ``to_dict``):
# ``to_dict`` spells one out only when a surface's rule for it differs from the catalogue default, so
# adding a signal leaves every stored fingerprint (and the snapshots and priors keyed by it) valid.
LATER_SIGNALS = frozenset({Signal.SESSION_END})
REWARD_KEYS = {"signals", "window_seconds", "default_reward", "late_rule", "half_life_seconds"}


class LateRule(enum.Enum):
    """What an event that occurred after its decision's reward window does (see fusion.py)."""

    # Updates the decision's reward as if it had been on time: the model learns the correction.
    APPLY = "apply"
    # Recorded (kept for analysis, still deduplicated) but trains nothing.
    IGNORE_FOR_TRAINING = "ignore_for_training"


@dataclass(frozen=True)
class SignalRule:
    """How one signal counts on one surface: ``weight * min(transform(value), cap)``."""

    signal: Signal
    weight: float
    transform: Transform
    cap: float = 1.0

    def __post_init__(self) -> None:
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise ConfigError(f"weight must be a finite number, got {weight!r}")
        polarity = SIGNALS[self.signal].polarity
        if polarity is Polarity.POSITIVE and weight < 0:
            raise ConfigError(f"weight must be >= 0 ({self.signal.key} is a positive signal), got {weight}")
        if polarity is Polarity.NEGATIVE and weight > 0:
            raise ConfigError(f"weight must be <= 0 ({self.signal.key} is a negative signal), got {weight}")
        object.__setattr__(self, "weight", float(weight))
        object.__setattr__(self, "cap", positive("cap", self.cap))

    def contribution(self, value: float) -> float:
        """What an (aggregated) value of this signal adds to the reward before the clip to [0, 1]."""
        return self.weight * min(self.transform(value), self.cap)

    def to_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, **self.transform.to_dict(), "cap": self.cap}


def default_rule(signal: Signal) -> SignalRule:
    """The catalogue's rule for ``signal``: default weight and transform, cap 1."""
    spec = SIGNALS[signal]
    return SignalRule(signal, spec.default_weight, spec.transform)


@dataclass(frozen=True)
class RewardConfig:
    """One surface's reward rules (frozen, validated on construction; see the module docstring)."""

    rules: Mapping[Signal, SignalRule] = field(default_factory=dict, hash=False)
    """Rule per signal; signals left out get :func:`default_rule`."""
    window_seconds: float = 3600.0
    """Reward window per decision: events that occurred later than this after the decision are late."""
    default_reward: float = 0.0
    """Reward of a decision-item with no training event of a weighted signal (e.g. its window closed empty)."""
    late_rule: LateRule = LateRule.APPLY
    """What a late event does; "apply" so that late feedback is used, not only kept."""
    half_life_seconds: float | None = None
    """Evidence halves every this many seconds of event time (decay.py); None: no decay."""

    def __post_init__(self) -> None:
        rules = {signal: default_rule(signal) for signal in Signal}
        for signal, rule in self.rules.items():
            if rule.signal is not signal:
                raise ConfigError(f"rules[{signal.key}] is the rule of {rule.signal.key}")
            rules[signal] = rule
        object.__setattr__(self, "rules", MappingProxyType(rules))
        window = in_interval("window_seconds", self.window_seconds, 0.0, MAX_WINDOW_SECONDS, open_low=True)
        object.__setattr__(self, "window_seconds", window)
        object.__setattr__(self, "default_reward", unit_interval("default_reward", self.default_reward))
        if not isinstance(self.late_rule, LateRule):
            raise ConfigError(f"late_rule must be a LateRule, got {self.late_rule!r}")
        half_life = self.half_life_seconds
        if half_life is not None:
            finite = isinstance(half_life, int | float) and not isinstance(half_life, bool) and math.isfinite(half_life)
            if not finite or half_life < MIN_HALF_LIFE_SECONDS:
                raise ConfigError(
                    f"half_life_seconds must be a finite number >= {MIN_HALF_LIFE_SECONDS:g} "
                    f"(omit it for no decay), got {half_life!r}"
                )
            object.__setattr__(self, "half_life_seconds", float(half_life))

    def rule(self, signal: Signal) -> SignalRule:
        return self.rules[signal]

    @property
    def window_ms(self) -> int:
        return round(self.window_seconds * 1000)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "reward") -> RewardConfig:
        """Validate a ``reward`` table; errors name the key under ``where``."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where} must be a table, got {raw!r}")
        reject_unknown(where, raw, REWARD_KEYS)
        signals = raw.get("signals", {})
        if not isinstance(signals, Mapping):
            raise ConfigError(f"{where}.signals must be a table of signal name -> rule, got {signals!r}")
        rules = {}
        for key, spec in signals.items():
            if key not in BY_KEY:
                raise ConfigError(f"{where}.signals: unknown signal {key!r}; known: {', '.join(BY_KEY)}")
            rules[BY_KEY[key]] = _rule(f"{where}.signals.{key}", BY_KEY[key], spec)
        late = raw.get("late_rule", LateRule.APPLY.value)
        if late not in {rule.value for rule in LateRule}:
            known = ", ".join(repr(rule.value) for rule in LateRule)
            raise ConfigError(f"{where}.late_rule must be one of {known}, got {late!r}")
        scalars = {key: raw[key] for key in ("window_seconds", "default_reward", "half_life_seconds") if key in raw}
        try:
            return cls(rules=rules, late_rule=LateRule(late), **scalars)
        except ConfigError as exc:
            raise within(where, exc) from exc

    def to_dict(self) -> dict[str, Any]:
        """The table ``from_dict`` reads back to an equal config (every signal spelled out, except those
        of ``LATER_SIGNALS`` at their default rule)."""
        raw: dict[str, Any] = {
            "window_seconds": self.window_seconds,
            "default_reward": self.default_reward,
            "late_rule": self.late_rule.value,
            "signals": {
                signal.key: rule.to_dict()
                for signal, rule in self.rules.items()
                if signal not in LATER_SIGNALS or rule != default_rule(signal)
            },
        }
        if self.half_life_seconds is not None:
            raw["half_life_seconds"] = self.half_life_seconds
        return raw


def _rule(where: str, signal: Signal, spec: Any) -> SignalRule:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where} must be a table (weight, transform, ...), got {spec!r}")
    reject_unknown(where, spec, SIGNAL_KEYS)
    default = SIGNALS[signal]
    try:
        transform = _transform(spec, signal)
        return SignalRule(signal, spec.get("weight", default.default_weight), transform, cap=spec.get("cap", 1.0))
    except ConfigError as exc:
        raise within(where, exc) from exc


def _transform(spec: Mapping[str, Any], signal: Signal) -> Transform:
    default = SIGNALS[signal]
    kind = spec.get("transform", default.transform.kind)
    if kind not in TRANSFORM_PARAMS:
        Transform(kind)  # raises, naming the kinds
    params = TRANSFORM_PARAMS[kind]
    stray = sorted(set(spec) & {"scale", "offset", "at"} - set(params))
    if stray:
        raise ConfigError(f"{stray[0]} does not apply to transform {kind!r} (it takes {', '.join(params)})")
    if kind == default.transform.kind:
        base = default.transform
    elif kind == "linear":
        base = Transform("linear", scale=default.high - default.low, offset=default.low)
    else:
        missing = [name for name in params if name not in spec]
        if missing:
            raise ConfigError(f"{missing[0]} is required for transform {kind!r} on {signal.key}")
        base = Transform(kind)
    return Transform(kind, **{name: spec.get(name, getattr(base, name)) for name in params})
