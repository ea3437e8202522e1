"""The front's domain error and the one place it becomes a gRPC status."""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """An error the caller should see with `code` and `message` (never INTERNAL)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(field: str, problem: str) -> ServiceError:
    """INVALID_ARGUMENT whose message starts with the field's name."""
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {problem}")


def not_found(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message)


def unavailable(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, message)


# Shard-side rejections arrive as status names: the workers do not import grpc.
def from_status_name(name: str, message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode[name], message)
