from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExperimentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_STATUS_UNSPECIFIED: _ClassVar[ExperimentStatus]
    EXPERIMENT_STATUS_DRAFT: _ClassVar[ExperimentStatus]
    EXPERIMENT_STATUS_RUNNING: _ClassVar[ExperimentStatus]
    EXPERIMENT_STATUS_PAUSED: _ClassVar[ExperimentStatus]
    EXPERIMENT_STATUS_STOPPED: _ClassVar[ExperimentStatus]
EXPERIMENT_STATUS_UNSPECIFIED: ExperimentStatus
EXPERIMENT_STATUS_DRAFT: ExperimentStatus
EXPERIMENT_STATUS_RUNNING: ExperimentStatus
EXPERIMENT_STATUS_PAUSED: ExperimentStatus
EXPERIMENT_STATUS_STOPPED: ExperimentStatus

class Variant(_message.Message):
    __slots__ = ("name", "weight", "policies")
    class PoliciesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SurfacePolicy
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[SurfacePolicy, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: float
    policies: _containers.MessageMap[str, SurfacePolicy]
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[float] = ..., policies: _Optional[_Mapping[str, SurfacePolicy]] = ...) -> None: ...

class SurfacePolicy(_message.Message):
    __slots__ = ("algorithm", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    algorithm: str
    params: _containers.ScalarMap[str, float]
    def __init__(self, algorithm: _Optional[str] = ..., params: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Metric(_message.Message):
    __slots__ = ("source", "aggregate", "surface", "lower_is_better", "tolerance", "name")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    LOWER_IS_BETTER_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    source: str
    aggregate: str
    surface: str
    lower_is_better: bool
    tolerance: float
    name: str
    def __init__(self, source: _Optional[str] = ..., aggregate: _Optional[str] = ..., surface: _Optional[str] = ..., lower_is_better: _Optional[bool] = ..., tolerance: _Optional[float] = ..., name: _Optional[str] = ...) -> None: ...

class TargetingCondition(_message.Message):
    __slots__ = ("attribute", "operator", "values")
    ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    attribute: str
    operator: str
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, attribute: _Optional[str] = ..., operator: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class RampStep(_message.Message):
    __slots__ = ("coverage", "hold_hours", "min_users")
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    HOLD_HOURS_FIELD_NUMBER: _ClassVar[int]
    MIN_USERS_FIELD_NUMBER: _ClassVar[int]
    coverage: float
    hold_hours: float
    min_users: int
    def __init__(self, coverage: _Optional[float] = ..., hold_hours: _Optional[float] = ..., min_users: _Optional[int] = ...) -> None: ...

class ExperimentSpec(_message.Message):
    __slots__ = ("name", "description", "variants", "layer", "coverage", "targeting", "surfaces", "primary_metric", "guardrails", "mde", "mde_absolute", "alpha", "power", "planned_days", "ramp", "salt", "metadata", "no_auto_stop", "baseline_mean", "baseline_sd", "expected_daily_users", "refuse_infeasible", "holdout", "cuped_days", "no_cuped")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    TARGETING_FIELD_NUMBER: _ClassVar[int]
    SURFACES_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_METRIC_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_FIELD_NUMBER: _ClassVar[int]
    MDE_FIELD_NUMBER: _ClassVar[int]
    MDE_ABSOLUTE_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    POWER_FIELD_NUMBER: _ClassVar[int]
    PLANNED_DAYS_FIELD_NUMBER: _ClassVar[int]
    RAMP_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    NO_AUTO_STOP_FIELD_NUMBER: _ClassVar[int]
    BASELINE_MEAN_FIELD_NUMBER: _ClassVar[int]
    BASELINE_SD_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_DAILY_USERS_FIELD_NUMBER: _ClassVar[int]
    REFUSE_INFEASIBLE_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_FIELD_NUMBER: _ClassVar[int]
    CUPED_DAYS_FIELD_NUMBER: _ClassVar[int]
    NO_CUPED_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    variants: _containers.RepeatedCompositeFieldContainer[Variant]
    layer: str
    coverage: float
    targeting: _containers.RepeatedCompositeFieldContainer[TargetingCondition]
    surfaces: _containers.RepeatedScalarFieldContainer[str]
    primary_metric: Metric
    guardrails: _containers.RepeatedCompositeFieldContainer[Metric]
    mde: float
    mde_absolute: bool
    alpha: float
    power: float
    planned_days: float
    ramp: _containers.RepeatedCompositeFieldContainer[RampStep]
    salt: str
    metadata: _containers.ScalarMap[str, str]
    no_auto_stop: bool
    baseline_mean: float
    baseline_sd: float
    expected_daily_users: float
    refuse_infeasible: bool
    holdout: bool
    cuped_days: float
    no_cuped: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., variants: _Optional[_Iterable[_Union[Variant, _Mapping]]] = ..., layer: _Optional[str] = ..., coverage: _Optional[float] = ..., targeting: _Optional[_Iterable[_Union[TargetingCondition, _Mapping]]] = ..., surfaces: _Optional[_Iterable[str]] = ..., primary_metric: _Optional[_Union[Metric, _Mapping]] = ..., guardrails: _Optional[_Iterable[_Union[Metric, _Mapping]]] = ..., mde: _Optional[float] = ..., mde_absolute: _Optional[bool] = ..., alpha: _Optional[float] = ..., power: _Optional[float] = ..., planned_days: _Optional[float] = ..., ramp: _Optional[_Iterable[_Union[RampStep, _Mapping]]] = ..., salt: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., no_auto_stop: _Optional[bool] = ..., baseline_mean: _Optional[float] = ..., baseline_sd: _Optional[float] = ..., expected_daily_users: _Optional[float] = ..., refuse_infeasible: _Optional[bool] = ..., holdout: _Optional[bool] = ..., cuped_days: _Optional[float] = ..., no_cuped: _Optional[bool] = ...) -> None: ...

class VariantAllocation(_message.Message):
    __slots__ = ("variant", "weight", "coverage")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    variant: str
    weight: float
    coverage: float
    def __init__(self, variant: _Optional[str] = ..., weight: _Optional[float] = ..., coverage: _Optional[float] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("spec", "status", "version", "coverage", "ramp_step", "allocation", "retired_coverage", "created_at_ms", "updated_at_ms", "started_at_ms", "stopped_at_ms", "reason", "winner", "source", "stepped_at_ms", "changed_by", "planning")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    RAMP_STEP_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    RETIRED_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    STOPPED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WINNER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    STEPPED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BY_FIELD_NUMBER: _ClassVar[int]
    PLANNING_FIELD_NUMBER: _ClassVar[int]
    spec: ExperimentSpec
    status: ExperimentStatus
    version: int
    coverage: float
    ramp_step: int
    allocation: _containers.RepeatedCompositeFieldContainer[VariantAllocation]
    retired_coverage: float
    created_at_ms: int
    updated_at_ms: int
    started_at_ms: int
    stopped_at_ms: int
    reason: str
    winner: str
    source: str
    stepped_at_ms: int
    changed_by: str
    planning: ExperimentPlanning
    def __init__(self, spec: _Optional[_Union[ExperimentSpec, _Mapping]] = ..., status: _Optional[_Union[ExperimentStatus, str]] = ..., version: _Optional[int] = ..., coverage: _Optional[float] = ..., ramp_step: _Optional[int] = ..., allocation: _Optional[_Iterable[_Union[VariantAllocation, _Mapping]]] = ..., retired_coverage: _Optional[float] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., started_at_ms: _Optional[int] = ..., stopped_at_ms: _Optional[int] = ..., reason: _Optional[str] = ..., winner: _Optional[str] = ..., source: _Optional[str] = ..., stepped_at_ms: _Optional[int] = ..., changed_by: _Optional[str] = ..., planning: _Optional[_Union[ExperimentPlanning, _Mapping]] = ...) -> None: ...

class CreateExperimentRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: ExperimentSpec
    def __init__(self, spec: _Optional[_Union[ExperimentSpec, _Mapping]] = ...) -> None: ...

class UpdateExperimentRequest(_message.Message):
    __slots__ = ("spec", "expected_version")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    spec: ExperimentSpec
    expected_version: int
    def __init__(self, spec: _Optional[_Union[ExperimentSpec, _Mapping]] = ..., expected_version: _Optional[int] = ...) -> None: ...

class ExperimentRequest(_message.Message):
    __slots__ = ("name", "expected_version", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    expected_version: int
    reason: str
    def __init__(self, name: _Optional[str] = ..., expected_version: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class StopExperimentRequest(_message.Message):
    __slots__ = ("name", "expected_version", "reason", "winner")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WINNER_FIELD_NUMBER: _ClassVar[int]
    name: str
    expected_version: int
    reason: str
    winner: str
    def __init__(self, name: _Optional[str] = ..., expected_version: _Optional[int] = ..., reason: _Optional[str] = ..., winner: _Optional[str] = ...) -> None: ...

class RampExperimentRequest(_message.Message):
    __slots__ = ("name", "expected_version", "coverage")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    expected_version: int
    coverage: float
    def __init__(self, name: _Optional[str] = ..., expected_version: _Optional[int] = ..., coverage: _Optional[float] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ("status", "layer")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    status: ExperimentStatus
    layer: str
    def __init__(self, status: _Optional[_Union[ExperimentStatus, str]] = ..., layer: _Optional[str] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments",)
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ...) -> None: ...

class ExperimentHistoryRequest(_message.Message):
    __slots__ = ("name", "limit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    limit: int
    def __init__(self, name: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ExperimentChange(_message.Message):
    __slots__ = ("version", "action", "at_ms", "experiment")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    version: int
    action: str
    at_ms: int
    experiment: Experiment
    def __init__(self, version: _Optional[int] = ..., action: _Optional[str] = ..., at_ms: _Optional[int] = ..., experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class ExperimentHistoryResponse(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[ExperimentChange]
    def __init__(self, changes: _Optional[_Iterable[_Union[ExperimentChange, _Mapping]]] = ...) -> None: ...

class DeleteExperimentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VariantUsers(_message.Message):
    __slots__ = ("variant", "users", "expected_share")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SHARE_FIELD_NUMBER: _ClassVar[int]
    variant: str
    users: int
    expected_share: float
    def __init__(self, variant: _Optional[str] = ..., users: _Optional[int] = ..., expected_share: _Optional[float] = ...) -> None: ...

class MetricComparison(_message.Message):
    __slots__ = ("metric", "role", "variant", "test", "control_mean", "variant_mean", "difference", "ci_low", "ci_high", "relative", "relative_ci_low", "relative_ci_high", "p_value", "adjusted_p_value", "confidence", "effect_size", "verdict", "cuped", "variance_reduction")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    CONTROL_MEAN_FIELD_NUMBER: _ClassVar[int]
    VARIANT_MEAN_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_CI_LOW_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    ADJUSTED_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    EFFECT_SIZE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    CUPED_FIELD_NUMBER: _ClassVar[int]
    VARIANCE_REDUCTION_FIELD_NUMBER: _ClassVar[int]
    metric: str
    role: str
    variant: str
    test: str
    control_mean: float
    variant_mean: float
    difference: float
    ci_low: float
    ci_high: float
    relative: float
    relative_ci_low: float
    relative_ci_high: float
    p_value: float
    adjusted_p_value: float
    confidence: float
    effect_size: float
    verdict: str
    cuped: bool
    variance_reduction: float
    def __init__(self, metric: _Optional[str] = ..., role: _Optional[str] = ..., variant: _Optional[str] = ..., test: _Optional[str] = ..., control_mean: _Optional[float] = ..., variant_mean: _Optional[float] = ..., difference: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., relative: _Optional[float] = ..., relative_ci_low: _Optional[float] = ..., relative_ci_high: _Optional[float] = ..., p_value: _Optional[float] = ..., adjusted_p_value: _Optional[float] = ..., confidence: _Optional[float] = ..., effect_size: _Optional[float] = ..., verdict: _Optional[str] = ..., cuped: _Optional[bool] = ..., variance_reduction: _Optional[float] = ...) -> None: ...

class ExperimentPlanning(_message.Message):
    __slots__ = ("users_per_variant", "users_per_day", "days_needed", "days_elapsed", "feasible", "message")
    USERS_PER_VARIANT_FIELD_NUMBER: _ClassVar[int]
    USERS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    DAYS_NEEDED_FIELD_NUMBER: _ClassVar[int]
    DAYS_ELAPSED_FIELD_NUMBER: _ClassVar[int]
    FEASIBLE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    users_per_variant: float
    users_per_day: float
    days_needed: float
    days_elapsed: float
    feasible: bool
    message: str
    def __init__(self, users_per_variant: _Optional[float] = ..., users_per_day: _Optional[float] = ..., days_needed: _Optional[float] = ..., days_elapsed: _Optional[float] = ..., feasible: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class ExperimentResults(_message.Message):
    __slots__ = ("experiment", "computed_at_ms", "variants", "sample_ratio_p_value", "sample_ratio_mismatch", "comparisons", "planning", "sequential", "timeline")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATIO_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATIO_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    PLANNING_FIELD_NUMBER: _ClassVar[int]
    SEQUENTIAL_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    computed_at_ms: int
    variants: _containers.RepeatedCompositeFieldContainer[VariantUsers]
    sample_ratio_p_value: float
    sample_ratio_mismatch: bool
    comparisons: _containers.RepeatedCompositeFieldContainer[MetricComparison]
    planning: ExperimentPlanning
    sequential: SequentialResults
    timeline: _containers.RepeatedCompositeFieldContainer[EffectPoint]
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ..., computed_at_ms: _Optional[int] = ..., variants: _Optional[_Iterable[_Union[VariantUsers, _Mapping]]] = ..., sample_ratio_p_value: _Optional[float] = ..., sample_ratio_mismatch: _Optional[bool] = ..., comparisons: _Optional[_Iterable[_Union[MetricComparison, _Mapping]]] = ..., planning: _Optional[_Union[ExperimentPlanning, _Mapping]] = ..., sequential: _Optional[_Union[SequentialResults, _Mapping]] = ..., timeline: _Optional[_Iterable[_Union[EffectPoint, _Mapping]]] = ...) -> None: ...

class PrimaryReading(_message.Message):
    __slots__ = ("variant", "looks", "information_fraction", "z", "boundary", "verdict", "decided_look")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    LOOKS_FIELD_NUMBER: _ClassVar[int]
    INFORMATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    BOUNDARY_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    DECIDED_LOOK_FIELD_NUMBER: _ClassVar[int]
    variant: str
    looks: int
    information_fraction: float
    z: float
    boundary: float
    verdict: str
    decided_look: int
    def __init__(self, variant: _Optional[str] = ..., looks: _Optional[int] = ..., information_fraction: _Optional[float] = ..., z: _Optional[float] = ..., boundary: _Optional[float] = ..., verdict: _Optional[str] = ..., decided_look: _Optional[int] = ...) -> None: ...

class GuardrailReading(_message.Message):
    __slots__ = ("metric", "variant", "p_value", "alpha", "ci_low", "ci_high", "regression")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_FIELD_NUMBER: _ClassVar[int]
    metric: str
    variant: str
    p_value: float
    alpha: float
    ci_low: float
    ci_high: float
    regression: bool
    def __init__(self, metric: _Optional[str] = ..., variant: _Optional[str] = ..., p_value: _Optional[float] = ..., alpha: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., regression: _Optional[bool] = ...) -> None: ...

class SequentialResults(_message.Message):
    __slots__ = ("looked_at_ms", "planned_users_per_variant", "primary", "guardrails", "sample_ratio_p_value", "sample_ratio_mismatch", "ramp_gate", "sample_ratio_suspended")
    LOOKED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    PLANNED_USERS_PER_VARIANT_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATIO_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATIO_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    RAMP_GATE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATIO_SUSPENDED_FIELD_NUMBER: _ClassVar[int]
    looked_at_ms: int
    planned_users_per_variant: float
    primary: _containers.RepeatedCompositeFieldContainer[PrimaryReading]
    guardrails: _containers.RepeatedCompositeFieldContainer[GuardrailReading]
    sample_ratio_p_value: float
    sample_ratio_mismatch: bool
    ramp_gate: str
    sample_ratio_suspended: bool
    def __init__(self, looked_at_ms: _Optional[int] = ..., planned_users_per_variant: _Optional[float] = ..., primary: _Optional[_Iterable[_Union[PrimaryReading, _Mapping]]] = ..., guardrails: _Optional[_Iterable[_Union[GuardrailReading, _Mapping]]] = ..., sample_ratio_p_value: _Optional[float] = ..., sample_ratio_mismatch: _Optional[bool] = ..., ramp_gate: _Optional[str] = ..., sample_ratio_suspended: _Optional[bool] = ...) -> None: ...

class EffectPoint(_message.Message):
    __slots__ = ("at_ms", "metric", "variant", "users", "control_users", "relative", "relative_ci_low", "relative_ci_high")
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_USERS_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_CI_LOW_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    at_ms: int
    metric: str
    variant: str
    users: int
    control_users: int
    relative: float
    relative_ci_low: float
    relative_ci_high: float
    def __init__(self, at_ms: _Optional[int] = ..., metric: _Optional[str] = ..., variant: _Optional[str] = ..., users: _Optional[int] = ..., control_users: _Optional[int] = ..., relative: _Optional[float] = ..., relative_ci_low: _Optional[float] = ..., relative_ci_high: _Optional[float] = ...) -> None: ...
