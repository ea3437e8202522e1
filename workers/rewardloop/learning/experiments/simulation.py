"""Monte-Carlo checks of the sequential tests: A/A false positives under peeking, power within a
planned horizon, SRM alarms; shared by ``bench/experiments_sequential.py`` and the unit tests.

Why: a sequential design's guarantee is about repeated looks, which no single-look test can show.
Simulated A/A experiments (no true difference) looked at daily, or after every batch of users,
measure how often each test ever rejects; the fixed-horizon z-test peeked at the same looks is
measured in the same run, so the simulation demonstrably can fail. With a true effect at the MDE
and traffic planned for a horizon (``planned_users``), the share of experiments decided in time
is the design's power.

Experiments are simulated at the level of sufficient statistics, vectorised over experiments and
looks: per arm and batch of ``batch`` users, the sum of a Bernoulli metric is binomial; the sum
of a normal metric is normal and its within-batch sum of squares ``sd**2 chi2(batch - 1)``,
independent of it. Cumulative sums give each look's Welch estimate and variance exactly as the
service computes them from ``Moments``. Every run owns its generator, seeded by ``(seed, family)``.

>>> scenario = Scenario(users_per_day=1_000, days=2, looks_per_day=10)
>>> paths = simulate(scenario, experiments=3, rng=np.random.default_rng(0))
>>> paths.estimate.shape, paths.daily().users.tolist()
((3, 20), [1000, 2000])
>>> round(planned_users(0.05, 0.8, mde=0.1, variance_sum=2.0))
1570
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from scipy import special

from rewardloop.learning.experiments.always_valid import MixtureSPRT, SampleRatioTest
from rewardloop.learning.experiments.sequential import GroupSequential, inflation_factor
from rewardloop.learning.params import ConfigError, in_interval, int_in_range, positive

FAMILIES = ("bernoulli", "normal")
MC_Z = 1.96  # 95% Monte-Carlo intervals


@dataclass(frozen=True)
class Scenario:
    """Simulated experiments: two arms of equal traffic, a metric family, looks per day."""

    family: str = "bernoulli"
    baseline: float = 0.1
    """Control mean: a conversion rate for ``"bernoulli"``."""
    sd: float = 1.0
    """Standard deviation of a ``"normal"`` metric (both arms)."""
    effect: float = 0.0
    """Treatment mean minus control mean."""
    users_per_day: int = 2_000
    """Per arm."""
    days: int = 14
    looks_per_day: int = 20
    """Looks of the continuous tests, one per batch of ``users_per_day / looks_per_day`` users."""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        if self.family == "bernoulli":
            in_interval("baseline", self.baseline, 0.0, 1.0, open_low=True, open_high=True)
            in_interval("baseline + effect", self.baseline + self.effect, 0.0, 1.0, open_low=True, open_high=True)
        positive("sd", self.sd)
        int_in_range("days", self.days, 1, 365)
        int_in_range("looks_per_day", self.looks_per_day, 1, 10_000)
        int_in_range("users_per_day", self.users_per_day, 2 * self.looks_per_day, 10**9)
        if self.users_per_day % self.looks_per_day:
            raise ConfigError(
                f"users_per_day must be a multiple of looks_per_day ({self.looks_per_day}), got {self.users_per_day}"
            )

    @property
    def batch(self) -> int:
        """Users per arm between two continuous looks."""
        return self.users_per_day // self.looks_per_day

    @property
    def variance_sum(self) -> float:
        """Control's plus treatment's per-user variance: a difference of means has variance this / n."""
        if self.family == "normal":
            return 2.0 * self.sd**2
        treated = self.baseline + self.effect
        return self.baseline * (1.0 - self.baseline) + treated * (1.0 - treated)


@dataclass(frozen=True)
class Paths:
    """Every look of every simulated experiment: treatment minus control and its variance."""

    users: np.ndarray
    """(looks,) users per arm at each look."""
    day: np.ndarray
    """(looks,) days since the start at each look."""
    estimate: np.ndarray
    """(experiments, looks)."""
    variance: np.ndarray
    """(experiments, looks): Welch's ``s_t**2 / n + s_c**2 / n``."""

    @property
    def z(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.variance > 0.0, self.estimate / np.sqrt(self.variance), 0.0)

    def looks(self, keep: slice | np.ndarray) -> Paths:
        """The looks ``keep`` selects."""
        return Paths(self.users[keep], self.day[keep], self.estimate[:, keep], self.variance[:, keep])

    def daily(self) -> Paths:
        """The looks at the end of each day."""
        return self.looks(np.flatnonzero(self.day == np.round(self.day)))


def simulate(scenario: Scenario, experiments: int, rng: np.random.Generator) -> Paths:
    """``experiments`` independent runs of ``scenario``, observed after every batch."""
    experiments = int_in_range("experiments", experiments, 1, 10**7)
    looks, batch = scenario.days * scenario.looks_per_day, scenario.batch
    users = batch * np.arange(1, looks + 1)
    means, variances = [], []
    for mean in (scenario.baseline, scenario.baseline + scenario.effect):
        if scenario.family == "bernoulli":
            sums = rng.binomial(batch, mean, size=(experiments, looks)).astype(float)
            squares = sums
        else:
            sums = rng.normal(batch * mean, math.sqrt(batch) * scenario.sd, size=(experiments, looks))
            squares = scenario.sd**2 * rng.chisquare(batch - 1, size=(experiments, looks)) + sums**2 / batch
        total, total_sq = np.cumsum(sums, axis=1), np.cumsum(squares, axis=1)
        means.append(total / users)
        variances.append(np.maximum(total_sq - total**2 / users, 0.0) / (users - 1) / users)
    day = np.arange(1, looks + 1) / scenario.looks_per_day
    return Paths(users, day, means[1] - means[0], variances[0] + variances[1])


def _rng(seed: int, scenario: Scenario) -> np.random.Generator:
    """One stream per (seed, family): the families' runs of one seed are independent."""
    return np.random.default_rng((seed, FAMILIES.index(scenario.family)))


def first_look(crossed: np.ndarray) -> np.ndarray:
    """Per experiment (row), the first look that crossed; -1 if none did."""
    return np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)


def fixed_crossings(paths: Paths, alpha: float) -> np.ndarray:
    """The fixed-horizon two-sided z-test read at every look (the naive peeking baseline)."""
    return np.abs(paths.z) >= special.ndtri(1.0 - alpha / 2.0)


def sequential_crossings(paths: Paths, design: GroupSequential, planned: float) -> np.ndarray:
    """The group-sequential test at each look, ``t = users / planned``; looks after the final are dropped."""
    fractions = paths.users / planned
    final = int(np.searchsorted(fractions, 1.0))  # the first look at t >= 1, or past the end
    keep = min(final + 1, fractions.size)
    return np.abs(paths.z[:, :keep]) >= design.boundary(fractions[:keep])


def always_valid_crossings(paths: Paths, test: MixtureSPRT) -> np.ndarray:
    return test.p_values(paths.estimate, paths.variance) <= test.alpha


@dataclass(frozen=True)
class Rate:
    """A share of simulated experiments, with its Monte-Carlo uncertainty."""

    hits: int
    trials: int

    @property
    def rate(self) -> float:
        return self.hits / self.trials

    @property
    def se(self) -> float:
        return math.sqrt(self.rate * (1.0 - self.rate) / self.trials)

    def interval(self) -> tuple[float, float]:
        """Wilson's 95% interval (sound near 0, where false-alarm rates live)."""
        n, p, z2 = self.trials, self.rate, MC_Z * MC_Z
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = MC_Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    @classmethod
    def of(cls, hits: npt.ArrayLike) -> Rate:
        """The share of True in ``hits`` (one per experiment)."""
        flags = np.asarray(hits, dtype=bool)
        return cls(int(np.count_nonzero(flags)), int(flags.size))


def planned_users(alpha: float, power: float, mde: float, variance_sum: float, inflation: float = 1.0) -> float:
    """Users per arm for a two-sided test at ``alpha`` with ``power`` at ``mde``: the fixed-horizon
    normal sample ``(z_{1-alpha/2} + z_power)**2 (s_c**2 + s_t**2) / mde**2`` times ``inflation``
    (``sequential.inflation_factor`` for a group-sequential plan)."""
    z = special.ndtri(1.0 - alpha / 2.0) + special.ndtri(power)
    return float(inflation * z * z * variance_sum / mde**2)


def detectable_effect(alpha: float, power: float, users: float, variance_sum: float) -> float:
    """The effect a fixed-horizon test of ``users`` per arm detects with ``power`` (the MDE)."""
    z = special.ndtri(1.0 - alpha / 2.0) + special.ndtri(power)
    return float(z * math.sqrt(variance_sum / users))


def aa_study(scenario: Scenario, experiments: int, seed: int, alpha: float = 0.05) -> dict[str, Rate]:
    """False-positive rates of every test on A/A experiments (``effect`` is set to 0), by name.

    The group-sequential design plans the whole scenario (``days`` daily looks); the always-valid
    tests use ``tau`` = the MDE of that plan and look after every batch.
    """
    scenario = replace(scenario, effect=0.0)
    paths = simulate(scenario, experiments, _rng(seed, scenario))
    daily = paths.daily()
    planned = scenario.users_per_day * scenario.days
    tau = detectable_effect(alpha, 0.8, planned, scenario.variance_sum)
    crossed = {
        "fixed z-test, once at the horizon": fixed_crossings(daily, alpha)[:, -1:],
        "fixed z-test, peeked daily": fixed_crossings(daily, alpha),
        "fixed z-test, peeked every batch": fixed_crossings(paths, alpha),
        "group sequential (OBF), daily": sequential_crossings(daily, GroupSequential(alpha), planned),
        "group sequential (Pocock), daily": sequential_crossings(daily, GroupSequential(alpha, "pocock"), planned),
        "mSPRT two-sided, every batch": always_valid_crossings(paths, MixtureSPRT(tau, alpha)),
        "guardrail mSPRT (treatment worse), every batch": always_valid_crossings(
            paths, MixtureSPRT(tau, alpha, alternative="less")
        ),
    }
    return {name: Rate.of(c.any(axis=1)) for name, c in crossed.items()}


@dataclass(frozen=True)
class PowerRow:
    """One test's record on experiments with a true effect: decided (the right way) in time."""

    decided: Rate
    mean_days: float
    """Mean days to the decision, over the experiments decided."""


@dataclass(frozen=True)
class PowerStudy:
    scenario: Scenario
    """The traffic the planner chose (``days``: the planned horizon) and the effect (the MDE)."""
    design_power: float
    """The group-sequential design's exact power at that traffic (numerical integration)."""
    inflation: float
    rows: dict[str, PowerRow]


def power_study(scenario: Scenario, experiments: int, seed: int, alpha: float = 0.05, power: float = 0.8) -> PowerStudy:
    """Size traffic for ``scenario.days`` daily looks of an O'Brien-Fleming design with ``power`` at
    ``scenario.effect`` (the MDE), then count the experiments decided within those days.

    Per-day traffic is the planned users over the days, rounded up to whole batches; the planned
    horizon is the traffic actually sent, so the last daily look is at ``t = 1`` exactly.
    """
    mde = positive("|effect|", abs(scenario.effect))
    design = GroupSequential(alpha)
    inflation = inflation_factor(alpha, power, looks=scenario.days)
    users = planned_users(alpha, power, mde, scenario.variance_sum, inflation)
    per_day = math.ceil(users / scenario.days / scenario.looks_per_day) * scenario.looks_per_day
    scenario = replace(scenario, users_per_day=max(per_day, 2 * scenario.looks_per_day))
    planned = scenario.users_per_day * scenario.days
    paths = simulate(scenario, experiments, _rng(seed, scenario))
    daily = paths.daily()
    drift = mde / math.sqrt(scenario.variance_sum / planned)
    upper, _ = design.exit_probabilities(daily.users / planned, drift)
    sign = 1.0 if scenario.effect > 0 else -1.0
    horizon = daily.looks(slice(-1, None))
    crossed = {
        "group sequential (OBF), daily": (daily, sequential_crossings(daily, design, planned)),
        "fixed z-test at the horizon": (horizon, fixed_crossings(horizon, alpha)),
        "mSPRT two-sided, daily": (daily, always_valid_crossings(daily, MixtureSPRT(mde, alpha))),
        "mSPRT two-sided, every batch": (paths, always_valid_crossings(paths, MixtureSPRT(mde, alpha))),
    }
    rows = {}
    for name, (looked, hits) in crossed.items():
        look = first_look(hits)
        at = np.maximum(look, 0)
        right_way = (look >= 0) & (sign * looked.estimate[np.arange(experiments), at] > 0)
        days = looked.day[at][right_way]
        rows[name] = PowerRow(Rate.of(right_way), float(days.mean()) if days.size else math.nan)
    return PowerStudy(scenario, float(upper.sum()), inflation, rows)


def srm_study(
    test: SampleRatioTest, *, share: float, users_per_look: int, looks: int, experiments: int, seed: int
) -> tuple[Rate, float]:
    """Share of experiments whose SRM test ever alarms, with assignments to the first variant at
    ``share`` (two variants) checked after every ``users_per_look``; and the mean users to alarm."""
    share = in_interval("share", share, 0.0, 1.0, open_low=True, open_high=True)
    rng = np.random.default_rng(seed)
    first = np.cumsum(rng.binomial(users_per_look, share, size=(experiments, looks)), axis=1)
    total = users_per_look * np.arange(1, looks + 1)
    counts = np.stack([first, total - first], axis=-1).astype(float)
    look = first_look(test.p_values(counts) <= test.alpha)
    alarmed = look >= 0
    users = float(np.mean(total[look[alarmed]])) if alarmed.any() else math.nan
    return Rate.of(alarmed), users
