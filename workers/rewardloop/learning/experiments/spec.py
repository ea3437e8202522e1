"""What an experiment is: the definition a team writes (over the Admin API), checked field by field.

An `ExperimentSpec` says who is in (layer, coverage, targeting), what they get (variants with their
allocation, the first being the control), what decides it (a primary metric, guardrail metrics,
the minimum detectable effect, the significance level and power) and how long it may take (planned
days, ramp schedule). It validates itself with messages that name the field, so a spec built by
hand is as safe as one parsed from a request; `spec_from_dict` / `spec_to_dict` are its stored
(JSON) form.

>>> spec = spec_from_dict("new_ranker", {
...     "variants": {"control": 1, "treatment": 1},
...     "primary_metric": {"source": "click", "aggregate": "conversion"},
... })
>>> spec.control, spec.coverage, spec.primary_metric.name
('control', 1.0, 'click_conversion')
>>> spec_from_dict("x", {"variants": {"a": 1}, "primary_metric": {"source": "click"}})
Traceback (most recent call last):
...
rewardloop.learning.params.ConfigError: variants must name at least two variants and at most 16
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

from rewardloop.learning.experiments.policies import SurfacePolicy, surface_policy
from rewardloop.learning.params import ConfigError, check_name, reject_unknown, within

AGGREGATES = ("conversion", "count", "sum")
OPERATORS = ("eq", "ne", "in", "not_in", "lt", "le", "gt", "ge")
MAX_VARIANTS = 16
MAX_METRICS = 20
MAX_CONDITIONS = 20
MAX_RAMP_STEPS = 10
MAX_VALUES = 100
MAX_DESCRIPTION = 2000
MAX_DAYS = 365.0
DEFAULT_MIN_USERS = 100


def _number(where: str, value: Any, low: float, high: float, *, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if value > high or value < low or (open_low and value == low):
        bracket = "(" if open_low else "["
        raise ConfigError(f"{where} must be in {bracket}{low:g}, {high:g}], got {value:g}")
    return float(value)


@dataclass(frozen=True)
class Metric:
    """A per-user metric: what `source` (a feedback signal, or ``reward``: the surface's fused
    reward) the user produced during the experiment, aggregated per user.

    ``conversion``: 1 if the user produced any, else 0 (a proportion); ``count``: how many events;
    ``sum``: the sum of their values. A guardrail's ``tolerance`` is the relative change in the
    bad direction it accepts (0.01: a 1% drop of a higher-is-better metric is a regression).
    """

    source: str
    aggregate: str = "conversion"
    surface: str = ""
    higher_is_better: bool = True
    tolerance: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        check_name("source", self.source)
        if self.aggregate not in AGGREGATES:
            raise ConfigError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {self.aggregate!r}")
        if self.surface:
            check_name("surface", self.surface)
        if not isinstance(self.higher_is_better, bool):
            raise ConfigError(f"higher_is_better must be true or false, got {self.higher_is_better!r}")
        object.__setattr__(self, "tolerance", _number("tolerance", self.tolerance, 0.0, 1.0))
        object.__setattr__(self, "name", self.name or f"{self.source}_{self.aggregate}")
        check_name("name", self.name)

    @property
    def binary(self) -> bool:
        return self.aggregate == "conversion"


@dataclass(frozen=True)
class Condition:
    """Targeting: the request attribute ``attribute`` compared with ``values`` (strings; ``lt`` ..
    ``ge`` compare as numbers). A request without the attribute matches only ``ne`` and ``not_in``."""

    attribute: str
    operator: str
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        check_name("attribute", self.attribute)
        if self.operator not in OPERATORS:
            raise ConfigError(f"operator must be one of {', '.join(OPERATORS)}, got {self.operator!r}")
        values = tuple(self.values)
        if not values or len(values) > MAX_VALUES or not all(isinstance(v, str) for v in values):
            raise ConfigError(f"values must be 1..{MAX_VALUES} strings, got {self.values!r}")
        if self.operator not in ("in", "not_in") and len(values) != 1:
            raise ConfigError(f"values must hold exactly one value for {self.operator}, got {len(values)}")
        if self.operator in ("lt", "le", "gt", "ge"):
            try:
                float(values[0])
            except ValueError:
                raise ConfigError(f"values must be a number for {self.operator}, got {values[0]!r}") from None
        object.__setattr__(self, "values", values)

    def matches(self, attributes: Mapping[str, str]) -> bool:
        value = attributes.get(self.attribute)
        op = self.operator
        if value is None:
            return op in ("ne", "not_in")
        if op in ("eq", "in"):
            return value in self.values
        if op in ("ne", "not_in"):
            return value not in self.values
        try:
            number, bound = float(value), float(self.values[0])
        except ValueError:
            return False
        return {"lt": number < bound, "le": number <= bound, "gt": number > bound, "ge": number >= bound}[op]


@dataclass(frozen=True)
class RampStep:
    """Raise coverage to ``coverage`` once the previous step has run ``hold_hours`` and its gates
    pass: every variant has ``min_users`` exposed users, no sample-ratio mismatch, no guardrail
    regression (the experiment monitor takes the step)."""

    coverage: float
    hold_hours: float = 24.0
    min_users: int = DEFAULT_MIN_USERS

    def __post_init__(self) -> None:
        object.__setattr__(self, "coverage", _number("coverage", self.coverage, 0.0, 1.0, open_low=True))
        object.__setattr__(self, "hold_hours", _number("hold_hours", self.hold_hours, 0.0, MAX_DAYS * 24))
        if isinstance(self.min_users, bool) or not isinstance(self.min_users, int) or not 0 <= self.min_users <= 10**9:
            raise ConfigError(f"min_users must be an integer in [0, 1e9], got {self.min_users!r}")


@dataclass(frozen=True)
class ExperimentSpec:
    """An experiment's definition. ``variants`` map names to allocation weights; the first is the control.

    ``layer``: experiments in one layer never share a user; "" gives the experiment a layer of its
    own. ``coverage``: the share of the layer's users it may enrol (the ramp raises it).
    ``mde``: the smallest effect on the primary metric worth detecting, relative to the control's
    mean (0.02 = 2%) unless ``mde_relative`` is false. ``auto_stop``: the monitor stops the
    experiment on a guardrail regression or sample-ratio mismatch (else it only reports them).
    ``holdout``: the users of the first variant get no other experiment (`assigner.py`).
    ``cuped_days``: the pre-exposure days whose primary-metric value is CUPED's covariate (0: none).
    ``baseline_mean`` / ``baseline_sd`` / ``expected_daily_users``: what the plan at creation is
    sized from (`results.plan_at_creation`); ``refuse_infeasible`` refuses an infeasible plan.
    ``policies``: variant -> surface -> the policy deciding that surface for the variant's users
    (`policies.py`); each surface must be one of ``surfaces``.
    """

    name: str
    variants: tuple[tuple[str, float], ...]
    primary_metric: Metric
    description: str = ""
    layer: str = ""
    coverage: float = 1.0
    targeting: tuple[Condition, ...] = ()
    surfaces: tuple[str, ...] = ()
    guardrails: tuple[Metric, ...] = ()
    mde: float = 0.02
    mde_relative: bool = True
    alpha: float = 0.05
    power: float = 0.8
    planned_days: float = 14.0
    ramp: tuple[RampStep, ...] = ()
    salt: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    auto_stop: bool = True
    baseline_mean: float | None = None
    baseline_sd: float | None = None
    expected_daily_users: float = 0.0
    refuse_infeasible: bool = False
    holdout: bool = False
    cuped_days: float = 14.0
    policies: Mapping[str, Mapping[str, SurfacePolicy]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name("name", self.name)
        self._check_variants()
        if not isinstance(self.description, str) or len(self.description) > MAX_DESCRIPTION:
            raise ConfigError(f"description must be a string of at most {MAX_DESCRIPTION} characters")
        if self.layer:
            check_name("layer", self.layer)
        object.__setattr__(self, "coverage", _number("coverage", self.coverage, 0.0, 1.0, open_low=True))
        if len(self.targeting) > MAX_CONDITIONS:
            raise ConfigError(f"targeting must hold at most {MAX_CONDITIONS} conditions, got {len(self.targeting)}")
        for surface in self.surfaces:
            check_name("surfaces", surface)
        if len(self.guardrails) + 1 > MAX_METRICS:
            raise ConfigError(f"guardrails must hold at most {MAX_METRICS - 1} metrics, got {len(self.guardrails)}")
        names = [self.primary_metric.name, *(g.name for g in self.guardrails)]
        if len(set(names)) != len(names):
            raise ConfigError(f"guardrails: metric names must differ from each other and the primary's: {names}")
        object.__setattr__(self, "mde", _number("mde", self.mde, 0.0, math.inf, open_low=True))
        object.__setattr__(self, "alpha", _number("alpha", self.alpha, 0.0, 0.5, open_low=True))
        object.__setattr__(self, "power", _number("power", self.power, 0.5, 0.999))
        object.__setattr__(
            self, "planned_days", _number("planned_days", self.planned_days, 0.0, MAX_DAYS, open_low=True)
        )
        self._check_ramp()
        object.__setattr__(self, "salt", self.salt or self.name)
        check_name("salt", self.salt)
        if len(self.metadata) > 50 or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()
        ):
            raise ConfigError("metadata must map at most 50 strings to strings")
        self._check_planning()
        self._check_policies()

    def _check_policies(self) -> None:
        for _, where, surface, policy in _each_policy(self.variant_names, self.policies):
            if not isinstance(policy, SurfacePolicy):
                raise ConfigError(f"{where}.{surface} must be a SurfacePolicy, got {policy!r}")
            if surface not in self.surfaces:
                raise ConfigError(f"{where}.{surface}: surface {surface!r} must be listed in surfaces")
        index = {v: i for i, v in enumerate(self.variant_names)}
        policies = {v: dict(p) for v, p in sorted(self.policies.items(), key=lambda vp: index[vp[0]]) if p}
        object.__setattr__(self, "policies", policies)

    def policy_of(self, variant: str, surface: str) -> SurfacePolicy | None:
        """The policy deciding ``surface`` for ``variant``'s users; None: the surface's own."""
        return self.policies.get(variant, {}).get(surface)

    def _check_planning(self) -> None:
        for name in ("auto_stop", "refuse_infeasible", "holdout"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.baseline_mean is not None:
            high = 1.0 if self.primary_metric.binary else 1e12
            low = 0.0 if self.primary_metric.binary else -1e12
            object.__setattr__(self, "baseline_mean", _number("baseline_mean", self.baseline_mean, low, high))
        if self.baseline_sd is not None:
            object.__setattr__(self, "baseline_sd", _number("baseline_sd", self.baseline_sd, 0.0, 1e12, open_low=True))
        object.__setattr__(
            self, "expected_daily_users", _number("expected_daily_users", self.expected_daily_users, 0.0, 1e12)
        )
        object.__setattr__(self, "cuped_days", _number("cuped_days", self.cuped_days, 0.0, MAX_DAYS))
        if self.holdout and self.layer:
            raise ConfigError(f"holdout: a holdout needs a layer of its own (leave layer empty), got {self.layer!r}")

    def _check_variants(self) -> None:
        if not 2 <= len(self.variants) <= MAX_VARIANTS:
            raise ConfigError(f"variants must name at least two variants and at most {MAX_VARIANTS}")
        seen = set()
        for variant, weight in self.variants:
            check_name("variants", variant)
            if variant in seen:
                raise ConfigError(f"variants: {variant!r} is named twice")
            seen.add(variant)
            _number(f"variants.{variant}", weight, 0.0, 1e6, open_low=True)
        object.__setattr__(self, "variants", tuple((v, float(w)) for v, w in self.variants))

    def _check_ramp(self) -> None:
        if len(self.ramp) > MAX_RAMP_STEPS:
            raise ConfigError(f"ramp must hold at most {MAX_RAMP_STEPS} steps, got {len(self.ramp)}")
        coverages = [step.coverage for step in self.ramp]
        if any(b <= a for a, b in pairwise(coverages)):
            raise ConfigError(f"ramp: coverages must increase step by step, got {coverages}")
        if coverages and coverages[-1] > self.coverage:
            raise ConfigError(f"ramp: the last step's coverage {coverages[-1]:g} exceeds coverage {self.coverage:g}")

    @property
    def control(self) -> str:
        return self.variants[0][0]

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(v for v, _ in self.variants)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (self.primary_metric, *self.guardrails)

    @property
    def layer_key(self) -> str:
        """The layer whose buckets the experiment draws on: its own when it names none."""
        return self.layer or f"~{self.name}"

    def start_coverage(self) -> float:
        return self.ramp[0].coverage if self.ramp else self.coverage


SPEC_KEYS = {
    "variants", "primary_metric", "description", "layer", "coverage", "targeting", "surfaces", "guardrails",
    "mde", "mde_relative", "alpha", "power", "planned_days", "ramp", "salt", "metadata", "auto_stop",
    "baseline_mean", "baseline_sd", "expected_daily_users", "refuse_infeasible", "holdout",
    "cuped_days", "policies",
}  # fmt: skip


def _metric(where: str, raw: Any) -> Metric:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table with source and aggregate")
    reject_unknown(where, raw, {"source", "aggregate", "surface", "higher_is_better", "tolerance", "name"})
    try:
        return Metric(**raw)
    except TypeError:
        raise ConfigError(f"{where}.source is required") from None
    except ConfigError as exc:
        raise within(where, exc) from exc


def _listed(where: str, raw: Any, limit: int) -> list[Any]:
    if not isinstance(raw, list | tuple) or len(raw) > limit:
        raise ConfigError(f"{where} must be a list of at most {limit} entries")
    return list(raw)


def _condition(where: str, raw: Any) -> Condition:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table with attribute, operator and values")
    reject_unknown(where, raw, {"attribute", "operator", "values"})
    try:
        return Condition(str(raw.get("attribute", "")), str(raw.get("operator", "")), tuple(raw.get("values", ())))
    except ConfigError as exc:
        raise within(where, exc) from exc


def _ramp_step(where: str, raw: Any) -> RampStep:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table with coverage, hold_hours and min_users")
    reject_unknown(where, raw, {"coverage", "hold_hours", "min_users"})
    try:
        return RampStep(
            raw.get("coverage"),  # type: ignore[arg-type]
            raw.get("hold_hours", 24.0),
            raw.get("min_users", DEFAULT_MIN_USERS),
        )
    except ConfigError as exc:
        raise within(where, exc) from exc


def spec_from_dict(name: str, raw: Mapping[str, Any]) -> ExperimentSpec:
    """The stored / requested form: errors name the field (``guardrails[1].tolerance must be ...``)."""
    check_name("name", name)
    reject_unknown("experiment", raw, SPEC_KEYS)
    variants = raw.get("variants")
    if not isinstance(variants, Mapping):
        raise ConfigError("variants must map variant names to allocation weights")
    if "primary_metric" not in raw:
        raise ConfigError("primary_metric is required")
    values = {
        k: v
        for k, v in raw.items()
        if k not in ("variants", "primary_metric", "targeting", "guardrails", "ramp", "policies")
    }
    return ExperimentSpec(
        name=name,
        variants=tuple(variants.items()),
        primary_metric=_metric("primary_metric", raw["primary_metric"]),
        targeting=tuple(
            _condition(f"targeting[{i}]", c) for i, c in enumerate(_listed("targeting", raw.get("targeting", []), 20))
        ),
        guardrails=tuple(
            _metric(f"guardrails[{i}]", g) for i, g in enumerate(_listed("guardrails", raw.get("guardrails", []), 19))
        ),
        ramp=tuple(_ramp_step(f"ramp[{i}]", s) for i, s in enumerate(_listed("ramp", raw.get("ramp", []), 10))),
        policies=_policies(list(variants), raw.get("policies", {})),
        **{**values, "surfaces": tuple(values.get("surfaces", ())), "metadata": dict(values.get("metadata", {}))},
    )


def spec_to_dict(spec: ExperimentSpec) -> dict[str, Any]:
    """The JSON-able form `spec_from_dict` reads back (the name is the record's key)."""
    out = asdict(spec)
    del out["name"]
    out["variants"] = dict(spec.variants)
    out["targeting"] = [{**c, "values": list(c["values"])} for c in out["targeting"]]
    out["surfaces"] = list(spec.surfaces)
    out["policies"] = {v: {s: p.to_dict() for s, p in by.items()} for v, by in spec.policies.items()}
    if not out["policies"]:
        del out["policies"]  # records as before policy experiments
    return out


def _policies(variants: list[Any], raw: Any) -> dict[str, dict[str, SurfacePolicy]]:
    """``{variant: {surface: {"algorithm": ..., "params": {...}}}}``; errors name
    ``variants[<index>].policies.<surface>.<field>``."""
    out: dict[str, dict[str, SurfacePolicy]] = {}
    for variant, where, surface, policy in _each_policy(variants, raw):
        try:
            out.setdefault(variant, {})[surface] = surface_policy(policy)
        except ConfigError as exc:
            text = str(exc)
            named = text.startswith(("algorithm", "params"))
            raise ConfigError(f"{where}.{surface}{'.' if named else ': '}{text}") from exc
    return out


def _each_policy(variants: Sequence[Any], raw: Any) -> Iterator[tuple[str, str, str, Any]]:
    """``(variant, where, surface, policy)`` of a ``{variant: {surface: policy}}`` map, its shape
    checked on the way (``where``: ``variants[<index>].policies``, as errors name it)."""
    if not isinstance(raw, Mapping):
        raise ConfigError("policies must map variant names to their surfaces' policies")
    names = list(variants)
    for variant, surfaces in raw.items():
        if variant not in names:
            raise ConfigError(f"policies: {variant!r} is not a variant ({', '.join(map(str, names))})")
        where = f"variants[{names.index(variant)}].policies"
        if not isinstance(surfaces, Mapping):
            raise ConfigError(f"{where} must map surface names to policies")
        for surface, policy in surfaces.items():
            check_name(where, surface)
            yield variant, where, surface, policy
