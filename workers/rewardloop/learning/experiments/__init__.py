"""A/B experiments: assignment by hashing (statistics and sequential designs come next)."""

from rewardloop.learning.experiments.assignment import ExperimentConfig, assign, assign_all, experiment_from_dict

__all__ = ["ExperimentConfig", "assign", "assign_all", "experiment_from_dict"]
