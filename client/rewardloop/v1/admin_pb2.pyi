from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvaluatePolicyRequest(_message.Message):
    __slots__ = ("surface", "algorithm", "params", "confidence", "max_decisions", "train_fraction")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MAX_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FRACTION_FIELD_NUMBER: _ClassVar[int]
    surface: str
    algorithm: str
    params: _containers.ScalarMap[str, float]
    confidence: float
    max_decisions: int
    train_fraction: float
    def __init__(self, surface: _Optional[str] = ..., algorithm: _Optional[str] = ..., params: _Optional[_Mapping[str, float]] = ..., confidence: _Optional[float] = ..., max_decisions: _Optional[int] = ..., train_fraction: _Optional[float] = ...) -> None: ...

class PolicyValueEstimate(_message.Message):
    __slots__ = ("estimator", "value", "ci_low", "ci_high", "std_error", "effective_sample_size", "max_weight")
    ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    STD_ERROR_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    estimator: str
    value: float
    ci_low: float
    ci_high: float
    std_error: float
    effective_sample_size: float
    max_weight: float
    def __init__(self, estimator: _Optional[str] = ..., value: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., std_error: _Optional[float] = ..., effective_sample_size: _Optional[float] = ..., max_weight: _Optional[float] = ...) -> None: ...

class EvaluatePolicyResponse(_message.Message):
    __slots__ = ("estimates", "logged_value", "train_decisions", "eval_decisions", "algorithm")
    ESTIMATES_FIELD_NUMBER: _ClassVar[int]
    LOGGED_VALUE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    EVAL_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    estimates: _containers.RepeatedCompositeFieldContainer[PolicyValueEstimate]
    logged_value: float
    train_decisions: int
    eval_decisions: int
    algorithm: str
    def __init__(self, estimates: _Optional[_Iterable[_Union[PolicyValueEstimate, _Mapping]]] = ..., logged_value: _Optional[float] = ..., train_decisions: _Optional[int] = ..., eval_decisions: _Optional[int] = ..., algorithm: _Optional[str] = ...) -> None: ...
