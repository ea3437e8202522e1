"""Exceptions raised by the rewardloop SDK.

Every failed call raises a `RewardloopError` that keeps the gRPC status code and details, so
callers can branch on the exception class (or on `err.code`) without importing grpc internals.
The original `grpc.RpcError` stays available as `err.__cause__`. Bad input also comes with
machine-readable `violations` (the server's `google.rpc.BadRequest` details): act on
`violation.field` without parsing the message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: its path (e.g. `"events[3].value"`) and what is wrong with it."""

    field: str
    description: str


class RewardloopError(Exception):
    """A call failed with a gRPC status other than OK.

    Attributes:
        code: the gRPC status code, e.g. `grpc.StatusCode.NOT_FOUND`.
        details: the server's message; for bad input it names the field.
        violations: for bad input, each bad field with its path and the problem.
    """

    def __init__(self, code: grpc.StatusCode, details: str = "", violations: Iterable[FieldViolation] = ()) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.violations = tuple(violations)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}" if self.details else self.code.name


class InvalidArgument(RewardloopError):
    """The request was malformed; `details` names the field. Fix the call: retrying cannot help."""


class NotFound(RewardloopError):
    """An unknown surface, experiment or decision."""


class Unavailable(RewardloopError):
    """The service or one of its dependencies is down; raised once the automatic retries are spent."""


class DeadlineExceeded(RewardloopError):
    """No answer within the call's timeout. A write may or may not have been applied: retry it
    with the same `event_id`."""


class PermissionDenied(RewardloopError):
    """The caller is authenticated but not allowed to make this call."""


class Unauthenticated(RewardloopError):
    """Missing or invalid credentials (e.g. the auth token in `metadata`)."""


class ResourceExhausted(RewardloopError):
    """The service is overloaded or a quota is spent; back off before calling again."""


_ERROR_BY_CODE: dict[grpc.StatusCode, type[RewardloopError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}

_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def error_for(code: grpc.StatusCode, details: str = "", violations: Iterable[FieldViolation] = ()) -> RewardloopError:
    """The SDK exception for a status: its dedicated subclass, or `RewardloopError` for other codes."""
    return _ERROR_BY_CODE.get(code, RewardloopError)(code, details, violations)


def status_code(number: int) -> grpc.StatusCode:
    """The `grpc.StatusCode` for a status number sent in a message body (unknown numbers → UNKNOWN)."""
    return _CODE_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def from_rpc_error(err: grpc.RpcError) -> RewardloopError:
    """Translate a failed call (sync `grpc.Call` or `grpc.aio.AioRpcError`) into an SDK exception."""
    code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
    details = err.details() if callable(getattr(err, "details", None)) else str(err)
    trailers = err.trailing_metadata() if callable(getattr(err, "trailing_metadata", None)) else None
    return error_for(code, details or "", violations_in(trailers))


def violations_in(trailing_metadata: Iterable[Any] | None) -> tuple[FieldViolation, ...]:
    """The `BadRequest` field violations in a call's `grpc-status-details-bin` trailer, if any.

    >>> from google.protobuf import any_pb2
    >>> detail = any_pb2.Any()
    >>> detail.Pack(error_details_pb2.BadRequest(field_violations=[{"field": "n", "description": "too big"}]))
    >>> status = status_pb2.Status(code=3, message="n: too big", details=[detail])
    >>> violations_in([(_DETAILS_KEY, status.SerializeToString())])
    (FieldViolation(field='n', description='too big'),)
    """
    for key, value in trailing_metadata or ():
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except Exception:  # a proxy's garbage must not hide the status itself
            return ()
        found: list[FieldViolation] = []
        for detail in status.details:
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request):
                found.extend(FieldViolation(v.field, v.description) for v in bad_request.field_violations)
        return tuple(found)
    return ()
