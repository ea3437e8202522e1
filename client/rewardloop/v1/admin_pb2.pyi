from rewardloop.v1 import experiments_pb2 as _experiments_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListSegmentsRequest(_message.Message):
    __slots__ = ("surface", "top_items")
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    TOP_ITEMS_FIELD_NUMBER: _ClassVar[int]
    surface: str
    top_items: int
    def __init__(self, surface: _Optional[str] = ..., top_items: _Optional[int] = ...) -> None: ...

class SegmentItem(_message.Message):
    __slots__ = ("item_id", "mean_reward", "lift")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    MEAN_REWARD_FIELD_NUMBER: _ClassVar[int]
    LIFT_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    mean_reward: float
    lift: float
    def __init__(self, item_id: _Optional[str] = ..., mean_reward: _Optional[float] = ..., lift: _Optional[float] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("id", "share", "plays", "prior_strength", "top_items", "is_new", "moved")
    ID_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    PLAYS_FIELD_NUMBER: _ClassVar[int]
    PRIOR_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    TOP_ITEMS_FIELD_NUMBER: _ClassVar[int]
    IS_NEW_FIELD_NUMBER: _ClassVar[int]
    MOVED_FIELD_NUMBER: _ClassVar[int]
    id: int
    share: float
    plays: float
    prior_strength: float
    top_items: _containers.RepeatedCompositeFieldContainer[SegmentItem]
    is_new: bool
    moved: float
    def __init__(self, id: _Optional[int] = ..., share: _Optional[float] = ..., plays: _Optional[float] = ..., prior_strength: _Optional[float] = ..., top_items: _Optional[_Iterable[_Union[SegmentItem, _Mapping]]] = ..., is_new: _Optional[bool] = ..., moved: _Optional[float] = ...) -> None: ...

class ListSegmentsResponse(_message.Message):
    __slots__ = ("surface", "version", "fitted_at_ms", "segments", "previous_version", "prior_strength")
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FITTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    PRIOR_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    surface: str
    version: int
    fitted_at_ms: int
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    previous_version: int
    prior_strength: float
    def __init__(self, surface: _Optional[str] = ..., version: _Optional[int] = ..., fitted_at_ms: _Optional[int] = ..., segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ..., previous_version: _Optional[int] = ..., prior_strength: _Optional[float] = ...) -> None: ...

class GetMembershipRequest(_message.Message):
    __slots__ = ("surface", "user_id")
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    surface: str
    user_id: str
    def __init__(self, surface: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class SegmentProbability(_message.Message):
    __slots__ = ("segment_id", "probability")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    segment_id: int
    probability: float
    def __init__(self, segment_id: _Optional[int] = ..., probability: _Optional[float] = ...) -> None: ...

class GetMembershipResponse(_message.Message):
    __slots__ = ("surface", "version", "memberships", "prior_strength", "interactions")
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIPS_FIELD_NUMBER: _ClassVar[int]
    PRIOR_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    surface: str
    version: int
    memberships: _containers.RepeatedCompositeFieldContainer[SegmentProbability]
    prior_strength: float
    interactions: float
    def __init__(self, surface: _Optional[str] = ..., version: _Optional[int] = ..., memberships: _Optional[_Iterable[_Union[SegmentProbability, _Mapping]]] = ..., prior_strength: _Optional[float] = ..., interactions: _Optional[float] = ...) -> None: ...

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
