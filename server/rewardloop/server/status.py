"""The front's domain error, and the one mapping from whatever went wrong to the caller's status.

`to_service_error` is that mapping: a `ServiceError` is already a status; a shard's `Rejected`
names its status; a failure below the front (Ray, Redis, a task's known error) or a missed
deadline has a fixed one; anything else is a bug (None), which `interceptors.RpcObserver` logs
and answers INTERNAL. `interceptors._abort` is the one place a `ServiceError` goes on the wire.

Every error a caller sees carries a short message that starts with the field's name and, for
bad input, a `google.rpc.Status` with `google.rpc.BadRequest` field violations in the
`grpc-status-details-bin` trailer (the gRPC convention for machine-readable details; the SDK
turns it into `InvalidArgument.violations`). A caller's value is never echoed in full: at
most a short prefix (`quote`), so a 100 KB item id cannot blow the metadata limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status.rpc_status import GRPC_DETAILS_METADATA_KEY
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from redis.exceptions import RedisError

from rewardloop.learning.evaluation.candidate import NotEnoughData
from rewardloop.state.store import out_of_memory
from rewardloop.workers.channel import ShardUnreachable
from rewardloop.workers.messages import Rejected

# How much of a caller's value an error message may quote.
QUOTE_CHARS = 40
# A whole message (and each violation's description) stays far below gRPC's 8 KB metadata limit.
MAX_MESSAGE_CHARS = 1000


def quote(value: str | bytes, limit: int = QUOTE_CHARS) -> str:
    """`repr` of a caller's value, or of a short prefix of it with its full size.

    >>> quote("home_feed")
    "'home_feed'"
    >>> quote("x" * 100_000)
    "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... (100000 bytes)"
    """
    if isinstance(value, bytes):
        size, text = len(value), value.decode("utf-8", errors="replace")
    else:
        size, text = len(value.encode("utf-8", errors="surrogatepass")), value
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({size} bytes)"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path (`events[3].value`, `context.numeric['x']`) and what is wrong."""

    field: str
    description: str


class ServiceError(Exception):
    """An error the caller should see with `code` and `message` (never INTERNAL for their mistake)."""

    def __init__(self, code: grpc.StatusCode, message: str, violations: Sequence[FieldViolation] = ()):
        message = _clip(message)
        super().__init__(message)
        self.code = code
        self.message = message
        self.violations = tuple(FieldViolation(_clip(v.field), _clip(v.description)) for v in violations)

    def within(self, prefix: str) -> ServiceError:
        """The same error about a field inside `prefix` (a batch's `events[3]`)."""
        return ServiceError(
            self.code,
            f"{prefix}.{self.message}",
            [FieldViolation(f"{prefix}.{v.field}", v.description) for v in self.violations],
        )

    def status_details(self) -> status_pb2.Status:
        """The `google.rpc.Status` sent in the `grpc-status-details-bin` trailer."""
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        if self.violations:
            detail = any_pb2.Any()
            detail.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in self.violations
                    ]
                )
            )
            status.details.append(detail)
        return status

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return ((GRPC_DETAILS_METADATA_KEY, self.status_details().SerializeToString()),)


def invalid(field: str, problem: str) -> ServiceError:
    """INVALID_ARGUMENT whose message starts with the field's name, with that field's violation."""
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {problem}", [FieldViolation(field, problem)])


def not_found(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message)


def unavailable(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, message)


def failed_precondition(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, message)


def internal(request_id: str) -> ServiceError:
    """A bug of ours: no details (they are in the server's log under the request id)."""
    return ServiceError(
        grpc.StatusCode.INTERNAL, f"internal error; the server log has it under request id {request_id}"
    )


def deadline_exceeded() -> ServiceError:
    """The caller's deadline ran out before the answer was ready."""
    return ServiceError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")


def unauthenticated(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAUTHENTICATED, message)


def permission_denied(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.PERMISSION_DENIED, message)


try:  # Ray >= 2.40 raises this while a restarting actor cannot take calls yet.
    from ray.exceptions import ActorUnavailableError

    _ACTOR_DOWN: tuple[type[BaseException], ...] = (
        RayActorError, ActorUnavailableError, GetTimeoutError, ShardUnreachable
    )  # fmt: skip
except ImportError:  # pragma: no cover
    _ACTOR_DOWN = (RayActorError, GetTimeoutError, ShardUnreachable)


@overload
def to_service_error(failure: Rejected) -> ServiceError: ...
@overload
def to_service_error(failure: BaseException) -> ServiceError | None: ...
def to_service_error(failure: BaseException | Rejected) -> ServiceError | None:
    """The caller's status for anything that went wrong, or None for a bug (answered INTERNAL).

    >>> to_service_error(Rejected("NOT_FOUND", "decision_id 'd' is not a decision of this user")).code.name
    'NOT_FOUND'
    >>> to_service_error(TimeoutError()).message
    'deadline exceeded'
    >>> to_service_error(KeyError("a bug")) is None
    True
    """
    if isinstance(failure, ServiceError):
        return failure
    if isinstance(failure, Rejected):
        return _rejected(failure)
    # Ray's GetTimeoutError is also a TimeoutError: a shard that does not answer is UNAVAILABLE
    # (retry), so the failures below the front are matched before the caller's deadline.
    below = _below_front(failure)
    if below is not None:
        return below
    if isinstance(failure, TimeoutError):
        return deadline_exceeded()
    return None


def _rejected(rejection: Rejected) -> ServiceError:
    """A shard-side rejection (the workers do not import grpc): status name, message, field."""
    code = grpc.StatusCode[rejection.code]
    if code is grpc.StatusCode.INVALID_ARGUMENT and rejection.field:
        field = rejection.field
        return ServiceError(
            code, rejection.message, [FieldViolation(field, rejection.message.removeprefix(f"{field}: "))]
        )
    return ServiceError(code, rejection.message)


def _below_front(exc: BaseException) -> ServiceError | None:
    """A failure below the front: Ray actor down, Redis (bare or as a task's cause), too few logs."""
    if isinstance(exc, _ACTOR_DOWN):
        return unavailable(f"shard unavailable, retry: {type(exc).__name__}")
    cause = exc.cause if isinstance(exc, RayTaskError) else exc
    if out_of_memory(cause):
        return unavailable("storage is full (Redis maxmemory): nothing of this call was applied; retry later")
    if isinstance(cause, RedisError):
        return unavailable(f"storage unavailable, retry: {type(cause).__name__}")
    if isinstance(cause, NotEnoughData):
        return failed_precondition(str(cause))
    return None
