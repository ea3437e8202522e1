"""DQN (Mnih et al. 2015) and Double DQN (van Hasselt et al. 2016), readable top to bottom like CleanRL's ``dqn.py``.

An online Q-network learns from minibatches of a replay buffer; a target network, copied from the
online one every ``target_update_interval`` gradient steps (or moved toward it by ``tau``), gives
the TD target. Double DQN picks the next action with the online network and values it with the
target network, which removes most of the max operator's over-estimation.

The learner counts the transitions it was given (``transitions``): that count drives the
exploration schedule and when to train, so a learner fed the same transitions in the same order,
with the same seed, ends with the same weights (the trainer's exact resume relies on it). Torch's
global RNG is left alone: networks are initialised under ``torch.random.fork_rng``, and minibatches
are drawn from the learner's own numpy generator. Replicas that serve the policy should run
``torch.set_num_threads(1)``.

>>> config = DQNConfig(observation_size=3, n_actions=2, learning_starts=4, batch_size=4, seed=0)
>>> agent = DQN(config)
>>> obs = np.ones(3, dtype=np.float32)
>>> action, propensity = agent.act(obs)
>>> propensity  # epsilon is 1 at the start: uniform over 2 actions
0.5
>>> for _ in range(6):
...     agent.observe(obs, action, 1.0, obs, done=True)
>>> agent.transitions, agent.gradient_steps
(6, 3)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from rewardloop.learning.agents.config import DQNConfig
from rewardloop.learning.agents.exploration import choose
from rewardloop.learning.agents.replay import ReplayBuffer

F32 = NDArray[np.float32]


class QNetwork(nn.Module):
    """An MLP from a state vector to one Q-value per action."""

    def __init__(self, observation_size: int, n_actions: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = observation_size
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_actions))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_network(config: DQNConfig, seed: int) -> QNetwork:
    """A Q-network initialised from ``seed`` without touching torch's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return QNetwork(config.observation_size, config.n_actions, config.hidden)


class DQN:
    """The learner: online and target networks, Adam, the replay ring and the counters."""

    def __init__(self, config: DQNConfig) -> None:
        self.config = config
        self.q_network = build_network(config, config.seed)
        self.target_network = build_network(config, config.seed)
        self.target_network.load_state_dict(self.q_network.state_dict())
        self.optimizer = torch.optim.Adam(self.q_network.parameters(), lr=config.learning_rate)
        self.buffer = ReplayBuffer(config.buffer_size, config.observation_size)
        self.rng = np.random.default_rng(config.seed)
        self.transitions = 0
        self.gradient_steps = 0
        self.last_loss = float("nan")

    # --- acting ---------------------------------------------------------------------------

    def q_values(self, observations: F32) -> NDArray[np.float64]:
        """Q-values of a batch of states (rows), or of one state."""
        x = torch.from_numpy(np.ascontiguousarray(observations, dtype=np.float32))
        with torch.inference_mode():
            q = self.q_network(x)
        return q.numpy().astype(np.float64)

    def act(self, observation: F32) -> tuple[int, float]:
        """An action for one state and the probability the exploration rule gave it."""
        q = self.q_values(observation)
        return choose(self.config.exploration.probabilities(q, self.transitions), self.rng)

    def greedy_actions(self, observations: F32) -> NDArray[np.int64]:
        return np.asarray(self.q_values(observations).argmax(axis=-1), dtype=np.int64)

    # --- learning -------------------------------------------------------------------------

    def observe(self, observation: F32, action: int, reward: float, next_observation: F32, done: bool) -> None:
        """Store one transition and train when the schedule says so."""
        self.buffer.add(observation, action, reward, next_observation, done)
        self.transitions += 1
        c = self.config
        if self.transitions >= c.learning_starts and self.transitions % c.train_frequency == 0:
            for _ in range(c.gradient_steps):
                self.train_step()

    def train_step(self) -> float:
        """One gradient step on a minibatch from the replay buffer; returns the loss."""
        c = self.config
        batch = self.buffer.sample(c.batch_size, self.rng)
        obs = torch.as_tensor(batch.observations)
        next_obs = torch.as_tensor(batch.next_observations)
        rewards = torch.as_tensor(batch.rewards)
        dones = torch.as_tensor(batch.dones)
        with torch.no_grad():
            if c.double:
                next_actions = self.q_network(next_obs).argmax(dim=1, keepdim=True)
                next_q = self.target_network(next_obs).gather(1, next_actions).squeeze(1)
            else:
                next_q = self.target_network(next_obs).max(dim=1).values
            td_target = rewards + c.gamma * next_q * (1.0 - dones)
        q = self.q_network(obs).gather(1, torch.as_tensor(batch.actions).unsqueeze(1)).squeeze(1)
        loss = nn.functional.smooth_l1_loss(q, td_target)
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.q_network.parameters(), c.max_grad_norm)
        self.optimizer.step()
        self.gradient_steps += 1
        if self.gradient_steps % c.target_update_interval == 0:
            self._update_target()
        self.last_loss = float(loss.item())
        return self.last_loss

    def _update_target(self) -> None:
        tau = self.config.tau
        with torch.no_grad():
            for target, online in zip(self.target_network.parameters(), self.q_network.parameters(), strict=True):
                target.copy_(tau * online + (1.0 - tau) * target)

    # --- serving --------------------------------------------------------------------------

    def policy_state(self) -> dict[str, Any]:
        """What a serving replica needs: the online network's weights (a ``state_dict``)."""
        return {k: v.detach().clone() for k, v in self.q_network.state_dict().items()}
