"""Channel and call settings shared by `Client` and `AsyncClient`.

Retries are declared once, in the gRPC service config below, and carried out by gRPC itself:
there is no retry loop in the SDK.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as _distribution
from typing import Any, TypeAlias

import grpc

from rewardloop.v1 import assigner_pb2_grpc, feedback_pb2_grpc, recommender_pb2_grpc

DEFAULT_TIMEOUT = 2.0
"""Seconds allowed for a call (all its retries included) when the call does not say."""

Metadata: TypeAlias = Mapping[str, str] | Sequence[tuple[str, str | bytes]]
ChannelOptions: TypeAlias = Sequence[tuple[str, Any]]

_SERVICES = ("rewardloop.v1.Recommender", "rewardloop.v1.Feedback", "rewardloop.v1.Assigner")

# Only UNAVAILABLE is retried: the service returns it when the request was not processed
# (DESIGN.md, "dependency down"). Recommend has no side effect; Feedback is safe because every
# event carries an event_id fixed before the first attempt, so a repeat is counted once; Assign is
# a pure function. DEADLINE_EXCEEDED is not retried: the deadline bounds all attempts together.
# Backoff: attempt k waits a random time in [0, min(0.05 * 2**(k-1), 1)] s, so the 4 retries fit
# well inside the 2 s default deadline.
_RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.05s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}

_SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{"service": service} for service in _SERVICES],
            "retryPolicy": _RETRY_POLICY,
            # Fail fast while the server is unreachable instead of queueing until the deadline.
            "waitForReady": False,
        }
    ],
    # gRPC proposal A6: when failures outpace successes (above ~9% of attempts, for a ratio of 0.1)
    # retries stop, so an outage is not met with 5x the traffic. 100 tokens let a caller ride out
    # a short burst (a server restart) before throttling starts. Counted per channel.
    "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.1},
}


def _user_agent() -> str:
    try:
        version = _distribution.version("rewardloop-client")
    except _distribution.PackageNotFoundError:
        version = "unknown"
    return f"rewardloop-client-python/{version}"


def channel_options(extra: ChannelOptions = ()) -> list[tuple[str, Any]]:
    """gRPC channel options carrying the SDK's retry policy, then `extra` (which wins on conflict).

    Use it when you build the channel yourself and pass it as `channel=`:

        channel = grpc.secure_channel(target, credentials, options=channel_options())
    """
    options: dict[str, Any] = {
        "grpc.enable_retries": 1,
        "grpc.service_config": json.dumps(_SERVICE_CONFIG),
        "grpc.primary_user_agent": _user_agent(),
    }
    options.update(extra)
    return list(options.items())


@dataclass(frozen=True, slots=True)
class CallSettings:
    """Deadline and metadata sent with every call."""

    default_timeout: float
    metadata: tuple[tuple[str, str | bytes], ...]

    @classmethod
    def create(cls, default_timeout: float, metadata: Metadata | None) -> CallSettings:
        _check_timeout("default_timeout", default_timeout)
        pairs = tuple(metadata.items()) if isinstance(metadata, Mapping) else tuple(metadata or ())
        for key, _value in pairs:
            # gRPC rejects upper-case keys only when the call is made; say so at construction.
            if not isinstance(key, str) or key != key.lower():
                raise ValueError(f"metadata key {key!r} must be a lower-case str")
        return cls(float(default_timeout), pairs)

    def call_kwargs(self, timeout: float | None) -> dict[str, Any]:
        if timeout is None:
            timeout = self.default_timeout
        else:
            _check_timeout("timeout", timeout)
        return {"timeout": timeout, "metadata": self.metadata}


def _check_timeout(name: str, seconds: float) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(seconds).__name__}")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {seconds}")


class Stubs:
    """The generated stubs' callables, bound to one channel (sync or aio: the stubs accept both)."""

    def __init__(self, channel: Any) -> None:
        recommender = recommender_pb2_grpc.RecommenderStub(channel)
        feedback = feedback_pb2_grpc.FeedbackStub(channel)
        assigner = assigner_pb2_grpc.AssignerStub(channel)
        self.recommend = recommender.Recommend
        self.record = feedback.Record
        self.record_batch = feedback.RecordBatch
        self.assign = assigner.Assign


@dataclass(frozen=True, slots=True)
class Connection:
    """What a client holds: its channel (closed by the client only if it opened it) and settings."""

    channel: Any
    owns_channel: bool
    settings: CallSettings
    stubs: Stubs

    @classmethod
    def open(
        cls,
        grpc_module: Any,
        channel_type: type,
        *,
        target: str | None,
        channel: Any,
        credentials: grpc.ChannelCredentials | None,
        metadata: Metadata | None,
        default_timeout: float,
        options: ChannelOptions,
    ) -> Connection:
        """Open a channel to `target` with `grpc_module` (`grpc` or `grpc.aio`), or adopt `channel`."""
        settings = CallSettings.create(default_timeout, metadata)
        if channel is not None:
            if target is not None or credentials is not None or options:
                raise ValueError("pass either channel or target (with credentials and options), not both")
            if not isinstance(channel, channel_type):
                expected = f"{channel_type.__module__.split('._')[0]}.{channel_type.__name__}"
                raise TypeError(f"channel must be a {expected}, got {type(channel).__name__}")
            return cls(channel, False, settings, Stubs(channel))
        if not isinstance(target, str) or not target:
            raise ValueError("pass a target such as 'localhost:50051', or a channel")
        if credentials is None:
            opened = grpc_module.insecure_channel(target, options=channel_options(options))
        else:
            opened = grpc_module.secure_channel(target, credentials, options=channel_options(options))
        return cls(opened, True, settings, Stubs(opened))
