"""The episode loop: a learner against any gymnasium-style environment (reset / step).

Tabular learners act on a state index, so they need ``encode`` (observation -> index); DQN acts on
the observation itself. Sessions cut at the environment's time limit (``truncated``) are not
terminal: the last transition still bootstraps from the next state.

>>> from rewardloop.simulator.agent_env import AgentSessionEnv
>>> from rewardloop.learning.agents.tabular import QLearning, QLearningConfig
>>> env = AgentSessionEnv(seed=0)
>>> agent = QLearning(QLearningConfig(env.mdp.n_states, env.mdp.n_actions, seed=0))
>>> returns = train(env, agent, episodes=20, encode=env.mdp.state_of)
>>> len(returns), agent.steps == agent.transitions
(20, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from rewardloop.learning.agents.dqn import DQN
from rewardloop.learning.agents.tabular import QLearning


class Env(Protocol):
    def reset(self, *, seed: int | None = None) -> tuple[Any, dict[str, Any]]: ...

    def step(self, action: int) -> tuple[Any, float, bool, bool, dict[str, Any]]: ...


def train(
    env: Env,
    agent: DQN | QLearning,
    episodes: int,
    *,
    encode: Callable[[Any], int] | None = None,
    on_episode: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Run ``episodes`` sessions, learning from every transition; returns each session's return."""
    if isinstance(agent, QLearning) and encode is None:
        raise ValueError("a tabular learner needs encode: observation -> state index")
    returns: list[float] = []
    for episode in range(episodes):
        obs, _ = env.reset()
        total, done, truncated = 0.0, False, False
        if isinstance(agent, QLearning):
            assert encode is not None
            state = encode(obs)
            while not (done or truncated):
                action, _ = agent.act(state)
                obs, reward, done, truncated, _ = env.step(action)
                next_state = encode(obs)
                agent.update(state, action, reward, next_state, done)
                total += float(reward)
                state = next_state
        else:
            observation = np.asarray(obs, dtype=np.float32)
            while not (done or truncated):
                action, _ = agent.act(observation)
                obs, reward, done, truncated, _ = env.step(action)
                next_observation = np.asarray(obs, dtype=np.float32)
                agent.observe(observation, action, reward, next_observation, done)
                total += float(reward)
                observation = next_observation
        returns.append(total)
        if on_episode is not None:
            on_episode(episode, total)
    return returns
