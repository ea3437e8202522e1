"""Learning on the agent-session simulator, default configurations, five seeds each (issue 12).

Every policy is valued exactly on the simulator's MDP (no Monte Carlo noise in the verdict): the
greedy policy after 1,000 sessions must reach 90% of the optimum's return, and so beat both the
best fixed action and the best one-step (bandit) policy by more than 10%.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rewardloop.demo.train_agent import greedy_value
from rewardloop.learning.agents.dqn import DQN, DQNConfig
from rewardloop.learning.agents.tabular import QLearning, QLearningConfig
from rewardloop.learning.agents.training import train
from rewardloop.simulator.agent_env import AgentSessionEnv, SessionMDP

SEEDS = range(5)
# The tests that take 10-15 s a seed on 2 cores run one seed in `make test` (CI), all five in
# `make test-all`.
SLOW_SEEDS = [pytest.param(s, marks=pytest.mark.slow) if s >= 1 else s for s in SEEDS]
EPISODES = 1_000


@pytest.fixture(scope="module")
def benchmarks() -> dict[str, float]:
    return SessionMDP().benchmarks()


def _check(value: float, benchmarks: dict[str, float]) -> None:
    assert value >= 0.9 * benchmarks["optimal"], value / benchmarks["optimal"]
    assert value >= 1.1 * benchmarks["one-step policy"]
    assert value >= 1.1 * benchmarks["best fixed action"]


@pytest.mark.parametrize("seed", SEEDS)
def test_q_learning_reaches_90_percent_of_the_optimum_in_1000_sessions(seed: int, benchmarks: dict) -> None:
    env = AgentSessionEnv(seed=seed)
    agent = QLearning(QLearningConfig(env.mdp.n_states, env.mdp.n_actions, seed=seed))
    returns = train(env, agent, EPISODES, encode=env.mdp.state_of)
    _check(greedy_value(agent, env.mdp), benchmarks)
    # It learned while serving: the last 200 sessions earned more than the first 200.
    assert np.mean(returns[-200:]) > np.mean(returns[:200])


@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_dqn_reaches_90_percent_of_the_optimum_in_1000_sessions(seed: int, benchmarks: dict) -> None:
    torch.set_num_threads(1)
    env = AgentSessionEnv(seed=seed)
    agent = DQN(DQNConfig(env.mdp.observation_size, env.mdp.n_actions, seed=seed))
    train(env, agent, EPISODES)
    _check(greedy_value(agent, env.mdp), benchmarks)


@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_q_values_are_within_5_percent_of_q_star_where_it_has_data(seed: int) -> None:
    """The brief's "within 5% of the theoretical benchmark": on every (state, action) pair that
    holds at least 5% of the transitions, after 10,000 sessions. Fewer sessions leave the
    statistical error near the bar: a satisfied user's value is about r / (1 - gamma p) for a 0.9
    chance p of staying, so p estimated from n turns moves it by 1.4 / sqrt(n) of itself (4.5% at
    1,000 turns; after 5,000 sessions the pairs' errors reached 4.1%, bench/README.md)."""
    env = AgentSessionEnv(seed=seed)
    agent = QLearning(QLearningConfig(env.mdp.n_states, env.mdp.n_actions, seed=seed))
    train(env, agent, 10 * EPISODES, encode=env.mdp.state_of)
    q_star = env.mdp.optimal_q(agent.config.gamma)
    often = agent.visits >= 0.05 * agent.visits.sum()
    assert often.sum() >= 5
    error = np.abs(agent.q[often] - q_star[often]) / q_star[often]
    assert error.max() <= 0.05, error
