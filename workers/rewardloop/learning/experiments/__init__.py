"""A/B experiments: assignment by hashing (statistics and sequential designs come next)."""

from rewardloop.learning.experiments.assignment import assign, assign_all

__all__ = ["assign", "assign_all"]
