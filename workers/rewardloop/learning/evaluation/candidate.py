"""Off-policy evaluation of a candidate policy configuration on a surface's logs.

The candidate is trained as a population-level model on the older part of the logs (every
logged reward, through the same ``Policy.update`` the service uses), then frozen; its
first-slot action distribution on each newer decision is the target policy the estimators
evaluate against the propensities the deployed policy logged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rewardloop.learning.bandits import PolicyConfig, make_policy
from rewardloop.learning.evaluation.data import LoggedData
from rewardloop.learning.evaluation.estimators import Estimate, evaluate
from rewardloop.learning.evaluation.logged import LoggedDecisions
from rewardloop.learning.evaluation.reward_model import cross_fitted_predictions
from rewardloop.learning.surface import SurfaceConfig

MIN_EVAL_DECISIONS = 20


class NotEnoughData(ValueError):
    """Too few logged decisions to train and evaluate."""


@dataclass(frozen=True)
class CandidateEvaluation:
    algorithm: str
    estimates: dict[str, Estimate]
    logged_value: float
    train_decisions: int
    eval_decisions: int


def candidate_params(params: dict[str, float]) -> dict[str, float | int]:
    """Numbers from a command line or a proto map: whole ones become ints (window sizes, sample counts)."""
    return {k: int(v) if float(v).is_integer() else v for k, v in params.items()}


def evaluate_candidate(
    logs: LoggedDecisions,
    surface: SurfaceConfig,
    candidate: PolicyConfig,
    *,
    train_fraction: float = 0.5,
    confidence: float = 0.95,
    seed: int = 0,
) -> CandidateEvaluation:
    split = int(len(logs) * train_fraction)
    train, test = logs.split(split)
    if len(test) < MIN_EVAL_DECISIONS:
        raise NotEnoughData(
            f"{len(logs)} logged decisions of surface {surface.name!r}, {len(test)} left to evaluate "
            f"(need at least {MIN_EVAL_DECISIONS})"
        )
    n_arms = len(surface.items)
    policy = make_policy(
        candidate, n_arms, context_dim=logs.contexts.shape[1], arm_features=surface.item_feature_matrix()
    )
    state = policy.new_state()
    for x, arm, propensity, reward in zip(
        train.contexts, train.actions, train.propensities, train.rewards, strict=True
    ):
        policy.update(state, int(arm), float(reward), context=x, propensity=float(propensity))
    rng = np.random.default_rng(seed)
    arms = np.arange(n_arms)
    distribution = np.array([policy.distribution(state, arms, rng, context=x) for x in test.contexts])
    rows = np.arange(len(test))
    data = LoggedData(
        rewards=test.rewards,
        logging_propensities=test.propensities,
        target_probabilities=distribution[rows, test.actions],
        reward_predictions=cross_fitted_predictions(test.contexts, test.actions, test.rewards, n_arms, seed=seed),
        target_distribution=distribution,
        logged_actions=test.actions,
    )
    return CandidateEvaluation(
        algorithm=candidate.name,
        estimates=evaluate(data, confidence),
        logged_value=float(test.rewards.mean()),
        train_decisions=len(train),
        eval_decisions=len(test),
    )
