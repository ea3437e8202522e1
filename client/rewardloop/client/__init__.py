"""Python SDK for the rewardloop personalization service.

    from rewardloop.client import Client

    with Client("localhost:50051", metadata={"authorization": "Bearer <token>"}) as client:
        rec = client.recommend("user-1", "home_feed", n=3, context={"hour": 21, "device": "ios"})
        client.record("user-1", rec.item_ids[0], "click", decision_id=rec.decision_id)

`AsyncClient` has the same methods as coroutines.
"""

from rewardloop.client._aio import AsyncClient
from rewardloop.client._config import DEFAULT_TIMEOUT, channel_options
from rewardloop.client._sync import Client
from rewardloop.client.errors import (
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RewardloopError,
    Unauthenticated,
    Unavailable,
)
from rewardloop.client.types import FeedbackEvent, FeedbackResult, Recommendation, RecommendedItem, Signal

__all__ = [
    "DEFAULT_TIMEOUT",
    "AsyncClient",
    "Client",
    "DeadlineExceeded",
    "FeedbackEvent",
    "FeedbackResult",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "Recommendation",
    "RecommendedItem",
    "ResourceExhausted",
    "RewardloopError",
    "Signal",
    "Unauthenticated",
    "Unavailable",
    "channel_options",
]
