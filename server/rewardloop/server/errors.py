"""Moved to `rewardloop.server.status`; kept until every import is updated (layout clean-up)."""

from rewardloop.server.status import ServiceError

__all__ = ["ServiceError"]
