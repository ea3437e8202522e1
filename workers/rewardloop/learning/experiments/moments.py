"""Per-variant sufficient statistics of an experiment metric, kept incrementally while serving.

A fixed-horizon comparison of means (Welch), of proportions (Wald) and its CUPED adjustment
need only six sums per variant: the number of users ``n``, ``sum_y`` and ``sum_y2`` of the
metric, and ``sum_x``, ``sum_x2``, ``sum_xy`` with ``x`` the user's pre-experiment value of
the same metric (CUPED's covariate). Sums add, so the serving path keeps them in a Redis hash
with ``HINCRBYFLOAT`` and shards merge with ``+``; the statistics never see user rows.

The unit of analysis is the user: one ``y`` per user (their metric total or mean over the
experiment), so users are independent and the usual two-sample formulas apply. Keeping per-event
sums instead would understate the variance of any metric whose events cluster by user.

Raw sums lose precision when the mean is large against the spread: the variance comes from
``sum_y2 - sum_y**2 / n``, which keeps about ``16 - 2 * log10(|mean| / sd)`` significant digits.
Metrics in natural units (rates, counts, revenue per user) are far from that limit.

>>> control = Moments.of([1.0, 2.0, 3.0, 4.0], x=[1.0, 1.0, 2.0, 2.0])
>>> control.n, control.mean, round(control.variance, 4), control.covariance_xy
(4.0, 2.5, 1.6667, 0.6666666666666666)
>>> (control + Moments.of([5.0])).n
5.0
>>> Moments.from_dict(control.to_dict()) == control
True
>>> Moments.of([7.0]).variance
nan
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np
import numpy.typing as npt

from rewardloop.learning.params import ConfigError, reject_unknown

FIELDS = ("n", "sum_y", "sum_y2", "sum_x", "sum_x2", "sum_xy")


@dataclass(frozen=True)
class Moments:
    """Sums over one variant's users; the ``x`` sums are 0 when no pre-experiment value is kept."""

    n: float = 0.0
    """Number of users."""
    sum_y: float = 0.0
    """Sum of the users' metric values ``y``; the number of successes for a binary metric."""
    sum_y2: float = 0.0
    """Sum of ``y**2``."""
    sum_x: float = 0.0
    """Sum of the users' pre-experiment values ``x`` (CUPED's covariate)."""
    sum_x2: float = 0.0
    """Sum of ``x**2``."""
    sum_xy: float = 0.0
    """Sum of ``x * y``."""

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
                raise ConfigError(f"{field.name} must be a real number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"{field.name} must be finite, got {value}")
            object.__setattr__(self, field.name, float(value))
        if self.n < 0:
            raise ConfigError(f"n must be >= 0, got {self.n:g}")

    @classmethod
    def of(cls, y: npt.ArrayLike, x: npt.ArrayLike | None = None) -> Moments:
        """The moments of one variant's per-user values ``y`` (and pre-experiment values ``x``)."""
        ys = _values("y", y)
        if x is None:
            return cls(n=ys.size, sum_y=ys.sum(), sum_y2=ys @ ys)
        xs = _values("x", x)
        if xs.size != ys.size:
            raise ConfigError(f"x must have one value per user ({ys.size}, like y), got {xs.size}")
        return cls(n=ys.size, sum_y=ys.sum(), sum_y2=ys @ ys, sum_x=xs.sum(), sum_x2=xs @ xs, sum_xy=xs @ ys)

    def merge(self, other: Moments) -> Moments:
        """The moments of both sets of users (shards of one variant, or consecutive days)."""
        return Moments(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def __add__(self, other: Moments) -> Moments:
        if not isinstance(other, Moments):
            return NotImplemented
        return self.merge(other)

    def astuple(self) -> tuple[float, float, float, float, float, float]:
        """The six sums in the order of ``FIELDS``."""
        return (self.n, self.sum_y, self.sum_y2, self.sum_x, self.sum_x2, self.sum_xy)

    @property
    def mean(self) -> float:
        """Mean of ``y``; nan without users."""
        return self.sum_y / self.n if self.n > 0 else math.nan

    @property
    def mean_x(self) -> float:
        """Mean of ``x``; nan without users."""
        return self.sum_x / self.n if self.n > 0 else math.nan

    @property
    def variance(self) -> float:
        """Sample variance of ``y`` (ddof=1); nan with fewer than 2 users."""
        return self._co_moment(self.sum_y2, self.sum_y, self.sum_y, squares=True)

    @property
    def variance_x(self) -> float:
        """Sample variance of ``x`` (ddof=1); nan with fewer than 2 users."""
        return self._co_moment(self.sum_x2, self.sum_x, self.sum_x, squares=True)

    @property
    def covariance_xy(self) -> float:
        """Sample covariance of ``x`` and ``y`` (ddof=1); nan with fewer than 2 users."""
        return self._co_moment(self.sum_xy, self.sum_x, self.sum_y)

    def _co_moment(self, sum_ab: float, sum_a: float, sum_b: float, *, squares: bool = False) -> float:
        if self.n < 2:
            return math.nan
        centered = sum_ab - sum_a * sum_b / self.n
        if squares:  # rounding of sums kept by increments can leave a zero variance a hair below 0
            centered = max(centered, 0.0)
        return centered / (self.n - 1)

    def to_dict(self) -> dict[str, float]:
        """The six sums by name: the fields of the variant's Redis hash."""
        return asdict(self)

    @classmethod
    def from_dict(cls, spec: Mapping[str, float | int | str | bytes]) -> Moments:
        """Moments from ``to_dict`` or a Redis hash (values may be bytes); missing sums are 0."""
        reject_unknown("moments", spec, set(FIELDS))
        values: dict[str, float] = {}
        for name, raw in spec.items():
            try:
                values[name] = float(raw)
            except (TypeError, ValueError):
                raise ConfigError(f"{name} must be a real number, got {raw!r}") from None
        return cls(**values)


def _values(name: str, values: npt.ArrayLike) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an array of real numbers") from None
    if array.ndim != 1:
        raise ConfigError(f"{name} must be one-dimensional (one value per user), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ConfigError(f"{name} must be finite")
    return array
