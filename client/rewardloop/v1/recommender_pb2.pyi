from rewardloop.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "surface", "context", "candidates", "n")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    surface: str
    context: _common_pb2.Context
    candidates: _containers.RepeatedScalarFieldContainer[str]
    n: int
    def __init__(self, user_id: _Optional[str] = ..., surface: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.Context, _Mapping]] = ..., candidates: _Optional[_Iterable[str]] = ..., n: _Optional[int] = ...) -> None: ...

class RecommendedItem(_message.Message):
    __slots__ = ("item_id", "score", "propensity", "slot")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    propensity: float
    slot: int
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., propensity: _Optional[float] = ..., slot: _Optional[int] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("decision_id", "items", "policy", "model_version", "assignments")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    items: _containers.RepeatedCompositeFieldContainer[RecommendedItem]
    policy: str
    model_version: str
    assignments: _containers.RepeatedCompositeFieldContainer[_common_pb2.ExperimentAssignment]
    def __init__(self, decision_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[RecommendedItem, _Mapping]]] = ..., policy: _Optional[str] = ..., model_version: _Optional[str] = ..., assignments: _Optional[_Iterable[_Union[_common_pb2.ExperimentAssignment, _Mapping]]] = ...) -> None: ...
