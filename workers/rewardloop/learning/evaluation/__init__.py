"""Off-policy evaluation: what a target policy would have earned, estimated from logged decisions.

``LoggedData`` holds validated logs (reward, logging propensity and target probability of each
logged action; optionally a reward model and the target's full distribution for doubly
robust); ``ips``, ``snips`` and ``doubly_robust`` each return an ``Estimate`` with a confidence
interval and weight diagnostics; ``evaluate`` runs every estimator the data supports.
``fit_reward_model`` and ``cross_fitted_predictions`` build the reward model DR needs.

>>> import numpy as np
>>> data = LoggedData(rewards=np.array([1.0, 0.0, 1.0, 1.0]),
...                   logging_propensities=np.array([0.5, 0.5, 0.5, 0.5]),
...                   target_probabilities=np.array([1.0, 0.0, 0.5, 0.5]))
>>> {name: round(estimate.value, 4) for name, estimate in evaluate(data).items()}
{'ips': 1.0, 'snips': 1.0}
"""

from rewardloop.learning.evaluation.data import LoggedData
from rewardloop.learning.evaluation.estimators import Estimate, doubly_robust, evaluate, ips, snips
from rewardloop.learning.evaluation.reward_model import RewardModel, cross_fitted_predictions, fit_reward_model

__all__ = [
    "Estimate",
    "LoggedData",
    "RewardModel",
    "cross_fitted_predictions",
    "doubly_robust",
    "evaluate",
    "fit_reward_model",
    "ips",
    "snips",
]
