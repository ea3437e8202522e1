"""Config validation shared by every config type: ``ConfigError`` and the bound checks.

Every config type validates itself in ``__post_init__`` with these (MABWiser style), so no code path
builds an unchecked config; messages name the parameter and the bound. Parsers of TOML tables say
where the table is (``within``): ``surfaces.home.params: c must be > 0, got -1``.

>>> unit_interval("epsilon", 1.2)
Traceback (most recent call last):
...
rewardloop.learning.params.ConfigError: epsilon must be in [0, 1], got 1.2
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ConfigError(ValueError):
    """A policy config or its dict form is invalid; the message names the parameter."""


# --- hyper-parameter checks, used by the configs' __post_init__ ---------------------------


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{name} must be a real number, got {value!r}")
    return float(value)


def unit_interval(name: str, value: object) -> float:
    """``value`` as a float in [0, 1]."""
    x = _real(name, value)
    if not 0.0 <= x <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value}")
    return x


def positive(name: str, value: object) -> float:
    """``value`` as a finite float > 0."""
    x = _real(name, value)
    if not x > 0.0:
        raise ConfigError(f"{name} must be > 0, got {value}")
    if not math.isfinite(x):
        raise ConfigError(f"{name} must be finite, got {value}")
    return x


def in_interval(
    name: str, value: object, low: float, high: float, *, open_low: bool = False, open_high: bool = False
) -> float:
    """``value`` as a float in the interval from ``low`` to ``high``, each end open or closed."""
    x = _real(name, value)
    if not ((x > low if open_low else x >= low) and (x < high if open_high else x <= high)):
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise ConfigError(f"{name} must be in {interval}, got {value}")
    return x


def discount(name: str, value: object) -> float:
    """``value`` as a float in (0, 1), the open interval a per-step discount factor lives in."""
    return in_interval(name, value, 0.0, 1.0, open_low=True, open_high=True)


def boolean(name: str, value: object) -> bool:
    """``value`` if it is a bool (numpy's too); 0 and 1 are not."""
    if not isinstance(value, bool | np.bool_):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def int_in_range(name: str, value: object, low: int, high: int) -> int:
    """``value`` as an int in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


def integer_in(where: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in [low, high]; one message for both problems (service settings)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where} must be an integer in [{low}, {high}], got {value!r}")
    return value


def check_name(where: str, name: str) -> None:
    """Names of surfaces, experiments, variants and features: 1..64 characters of [A-Za-z0-9_.-]."""
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"{where}: name {name!r} must be 1..64 characters of [A-Za-z0-9_.-]")


def reject_unknown(where: str, spec: Mapping[str, Any], known: set[str]) -> None:
    """A table's keys must all be known: a typo must not silently fall back to a default."""
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def within(where: str, exc: ConfigError) -> ConfigError:
    """``exc`` about a field of the table at ``where`` (``surfaces.home.reward``)."""
    return ConfigError(f"{where}.{exc}")


def prior_strength(strength: object, n_arms: int | None) -> float | np.ndarray:
    """A prior's strength for ``Policy.combine``: a finite number >= 0, or (``n_arms`` given) one per arm."""
    if isinstance(strength, np.ndarray) and n_arms is not None:
        if strength.shape != (n_arms,) or not bool(np.all(np.isfinite(strength) & (strength >= 0))):
            raise ValueError(f"strength per arm must be {n_arms} finite numbers >= 0")
        return strength
    weight = float(strength) if isinstance(strength, int | float | np.integer | np.floating) else math.nan
    if isinstance(strength, bool) or not (0.0 <= weight < math.inf):
        raise ValueError(f"strength must be a finite number >= 0, got {strength!r}")
    return weight
