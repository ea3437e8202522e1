"""Feature pipeline: request context -> the vector a surface's policy learns from.

Each surface declares its context schema in the config::

    [surfaces.news.features]
    numeric = ["age_days", "hour_sin"]           # required, finite
    optional = { price = 0.0 }                   # numeric with a default when absent
    categorical = { device = ["ios", "android", "web"] }   # one-hot; absent or unseen value -> all zeros

The vector is ``[1.0 (bias), numeric..., optional..., one-hot..., real-time...]`` in declaration
order, so its meaning is fixed by the schema (and part of the surface's fingerprint).

**Real-time features.** ``realtime = ["feedback_1h", "positive_rate_24h", ...]`` appends the user's
own recent activity (``realtime.py``, configured once under ``[service.realtime]``): the front
builds the request part, the user's shard appends these at decision time from the events it has
seen, and the decision record keeps the whole vector, so a delayed reward trains with the features
the decision was made with. Counts enter as ``log1p(count)`` and ``session_seconds`` as
``log1p(minutes)`` so one heavy user does not dominate a linear model; rates, ``since_positive``
and affinities are in [0, 1] already. A context that breaks the
schema is the caller's mistake and is named precisely (``context.numeric['age_days']: ...``).
Features the schema does not declare are rejected too: a typo must not silently train on nothing.

>>> schema = FeatureSchema.from_dict({"numeric": ["x"], "categorical": {"d": ["a", "b"]}})
>>> schema.dim, schema.names
(4, ('bias', 'x', 'd=a', 'd=b'))
>>> schema.vector({"x": 2.0, "d": "b"}).tolist()
[1.0, 2.0, 0.0, 1.0]
>>> schema.vector({"d": "a"})
Traceback (most recent call last):
...
rewardloop.learning.features.schema.FeatureError: context.numeric['x']: required feature is missing
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from rewardloop.learning.features.realtime import RealtimeFeatures, UserActivity
from rewardloop.learning.params import ConfigError, reject_unknown, within


class FeatureError(ValueError):
    """A request context that does not fit the surface's schema; the message names the field."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True)
class FeatureSchema:
    numeric: tuple[str, ...] = ()
    optional: tuple[tuple[str, float], ...] = ()
    categorical: tuple[tuple[str, tuple[str, ...]], ...] = ()
    realtime: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """The values' checks (a hand-built schema is checked too); messages name the field."""
        if not all(isinstance(n, str) for n in self.numeric):
            raise ConfigError("numeric must be a list of feature names")
        for name, default in self.optional:
            if isinstance(default, bool) or not isinstance(default, int | float) or not math.isfinite(default):
                raise ConfigError(f"optional.{name} must be a finite number (the default), got {default!r}")
        object.__setattr__(self, "optional", tuple((n, float(d)) for n, d in self.optional))
        for name, values in self.categorical:
            if not isinstance(values, tuple) or not values or not all(isinstance(v, str) for v in values):
                raise ConfigError(f"categorical.{name} must be a non-empty list of category names")
            if len(set(values)) != len(values):
                raise ConfigError(f"categorical.{name} has duplicate categories")
        if not all(isinstance(n, str) for n in self.realtime):
            raise ConfigError("realtime must be a list of real-time feature names")
        request = [*self.numeric, *(n for n, _ in self.optional), *(n for n, _ in self.categorical)]
        if len(set(request)) != len(request) or len(set(self.realtime)) != len(self.realtime):
            raise ConfigError("a feature is declared twice")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "features") -> FeatureSchema:
        """A ``[features]`` table: its shape (keys, lists, tables) here, its values in ``__post_init__``."""
        reject_unknown(where, raw, {"numeric", "optional", "categorical", "realtime"})
        numeric, realtime = raw.get("numeric", []), raw.get("realtime", [])
        if not isinstance(numeric, list):
            raise ConfigError(f"{where}.numeric must be a list of feature names")
        if not isinstance(realtime, list):
            raise ConfigError(f"{where}.realtime must be a list of real-time feature names")
        optional, categorical = raw.get("optional", {}), raw.get("categorical", {})
        try:
            return cls(
                numeric=tuple(numeric),
                optional=tuple(optional.items()),
                categorical=tuple((n, tuple(v) if isinstance(v, list) else v) for n, v in categorical.items()),
                realtime=tuple(realtime),
            )
        except ConfigError as exc:
            if str(exc) == "a feature is declared twice":  # about the table as a whole: today's wording
                raise ConfigError(f"{where}: a feature is declared twice") from exc
            raise within(where, exc) from exc

    @property
    def request_names(self) -> tuple[str, ...]:
        """The part of the vector the request's context gives (``vector``)."""
        one_hot = tuple(f"{n}={v}" for n, values in self.categorical for v in values)
        return ("bias", *self.numeric, *(n for n, _ in self.optional), *one_hot)

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.request_names, *(f"rt:{n}" for n in self.realtime))

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def empty(self) -> bool:
        return not (self.numeric or self.optional or self.categorical or self.realtime)

    def to_dict(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "numeric": list(self.numeric),
            "optional": dict(self.optional),
            "categorical": {n: list(v) for n, v in self.categorical},
        }
        if self.realtime:  # absent when unused: the fingerprints of older surfaces stay as they were
            raw["realtime"] = list(self.realtime)
        return raw

    def realtime_vector(
        self, features: RealtimeFeatures, activity: UserActivity, now_ms: int
    ) -> npt.NDArray[np.float64]:
        """The real-time part of the vector at ``now_ms``, scaled (module docstring).

        >>> from rewardloop.learning.features.realtime import ActivityEvent
        >>> schema = FeatureSchema(realtime=("feedback_1h", "session_seconds", "positive_rate_24h"))
        >>> rt = RealtimeFeatures()
        >>> activity = rt.new_state()
        >>> rt.observe(activity, ActivityEvent(0, "feedback", True))
        >>> rt.observe(activity, ActivityEvent(120_000, "feedback", False))
        >>> schema.realtime_vector(rt, activity, now_ms=120_000).round(4).tolist()
        [1.0986, 1.0986, 0.5]
        """
        if not self.realtime:
            return np.empty(0)
        values = dict(zip(features.names, features.vector(activity, now_ms).tolist(), strict=True))
        return np.array([_scaled(name, values[name]) for name in self.realtime])

    def vector(self, context: Mapping[str, float | str]) -> npt.NDArray[np.float64]:
        """The request part of the policy's input (``request_names``); FeatureError names the offending field."""
        declared = {*self.numeric, *(n for n, _ in self.optional), *(n for n, _ in self.categorical)}
        for key in context:
            if key not in declared:
                known = ", ".join(sorted(declared)) or "none"
                raise FeatureError(f"context[{key!r}]", f"feature is not in the surface's schema (declared: {known})")
        out = np.zeros(len(self.request_names))
        out[0] = 1.0
        position = 1
        for name in self.numeric:
            if name not in context:
                raise FeatureError(f"context.numeric[{name!r}]", "required feature is missing")
            out[position] = _number(name, context[name])
            position += 1
        for name, default in self.optional:
            out[position] = _number(name, context[name]) if name in context else default
            position += 1
        for name, values in self.categorical:
            value = context.get(name)
            if value is not None:
                if not isinstance(value, str):
                    raise FeatureError(f"context.numeric[{name!r}]", "is categorical: send it in context.categorical")
                if value in values:
                    out[position + values.index(value)] = 1.0
            position += len(values)
        return out


def _scaled(name: str, value: float) -> float:
    if name.startswith(("decisions_", "feedback_")) or name == "session_events":
        return math.log1p(value)
    if name == "session_seconds":
        return math.log1p(value / 60.0)
    return value


def _number(name: str, value: float | str) -> float:
    if isinstance(value, str):
        raise FeatureError(f"context.categorical[{name!r}]", "is numeric: send it in context.numeric")
    if not math.isfinite(value):
        raise FeatureError(f"context.numeric[{name!r}]", f"must be finite, got {value}")
    return float(value)
