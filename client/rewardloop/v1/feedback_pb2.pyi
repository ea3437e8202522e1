import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Signal(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNAL_UNSPECIFIED: _ClassVar[Signal]
    SIGNAL_CLICK: _ClassVar[Signal]
    SIGNAL_DWELL: _ClassVar[Signal]
    SIGNAL_RATING: _ClassVar[Signal]
    SIGNAL_LIKE: _ClassVar[Signal]
    SIGNAL_IMPRESSION: _ClassVar[Signal]
    SIGNAL_COMPLETION: _ClassVar[Signal]
    SIGNAL_DISLIKE: _ClassVar[Signal]
    SIGNAL_SHARE: _ClassVar[Signal]
    SIGNAL_COMMENT: _ClassVar[Signal]
    SIGNAL_BOOKMARK: _ClassVar[Signal]
    SIGNAL_PURCHASE: _ClassVar[Signal]
    SIGNAL_SKIP: _ClassVar[Signal]
    SIGNAL_HIDE: _ClassVar[Signal]
    SIGNAL_REPORT: _ClassVar[Signal]
    SIGNAL_SESSION_END: _ClassVar[Signal]
SIGNAL_UNSPECIFIED: Signal
SIGNAL_CLICK: Signal
SIGNAL_DWELL: Signal
SIGNAL_RATING: Signal
SIGNAL_LIKE: Signal
SIGNAL_IMPRESSION: Signal
SIGNAL_COMPLETION: Signal
SIGNAL_DISLIKE: Signal
SIGNAL_SHARE: Signal
SIGNAL_COMMENT: Signal
SIGNAL_BOOKMARK: Signal
SIGNAL_PURCHASE: Signal
SIGNAL_SKIP: Signal
SIGNAL_HIDE: Signal
SIGNAL_REPORT: Signal
SIGNAL_SESSION_END: Signal

class FeedbackEvent(_message.Message):
    __slots__ = ("event_id", "user_id", "decision_id", "item_id", "surface", "signal", "value", "occurred_at")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    decision_id: str
    item_id: str
    surface: str
    signal: Signal
    value: float
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., decision_id: _Optional[str] = ..., item_id: _Optional[str] = ..., surface: _Optional[str] = ..., signal: _Optional[_Union[Signal, str]] = ..., value: _Optional[float] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordResponse(_message.Message):
    __slots__ = ("duplicate", "reward", "flag")
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    duplicate: bool
    reward: float
    flag: str
    def __init__(self, duplicate: _Optional[bool] = ..., reward: _Optional[float] = ..., flag: _Optional[str] = ...) -> None: ...

class RecordBatchRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[FeedbackEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[FeedbackEvent, _Mapping]]] = ...) -> None: ...

class EventResult(_message.Message):
    __slots__ = ("code", "message", "duplicate", "reward", "flag", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    duplicate: bool
    reward: float
    flag: str
    field: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., duplicate: _Optional[bool] = ..., reward: _Optional[float] = ..., flag: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class RecordBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EventResult]
    def __init__(self, results: _Optional[_Iterable[_Union[EventResult, _Mapping]]] = ...) -> None: ...
