from rewardloop.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AssignRequest(_message.Message):
    __slots__ = ("user_id", "experiments", "context")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    experiments: _containers.RepeatedScalarFieldContainer[str]
    context: _common_pb2.Context
    def __init__(self, user_id: _Optional[str] = ..., experiments: _Optional[_Iterable[str]] = ..., context: _Optional[_Union[_common_pb2.Context, _Mapping]] = ...) -> None: ...

class AssignResponse(_message.Message):
    __slots__ = ("assignments",)
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[_common_pb2.ExperimentAssignment]
    def __init__(self, assignments: _Optional[_Iterable[_Union[_common_pb2.ExperimentAssignment, _Mapping]]] = ...) -> None: ...
