"""Features: the request's context vector (``schema``) and the user's real-time activity (``realtime``)."""

from rewardloop.learning.features.realtime import ActivityEvent, RealtimeFeatures, UserActivity
from rewardloop.learning.features.schema import FeatureError, FeatureSchema

__all__ = ["ActivityEvent", "FeatureError", "FeatureSchema", "RealtimeFeatures", "UserActivity"]
