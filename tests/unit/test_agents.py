"""Agent learners' parts: exploration propensities, the replay ring, Q-learning's update, DQN's step, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardloop.learning.agents.checkpoint import dumps, loads
from rewardloop.learning.agents.dqn import DQN, DQNConfig
from rewardloop.learning.agents.exploration import (
    Boltzmann,
    EpsilonGreedy,
    choose,
    exploration_from_dict,
    exploration_to_dict,
)
from rewardloop.learning.agents.replay import ReplayBuffer
from rewardloop.learning.agents.tabular import QLearning, QLearningConfig
from rewardloop.learning.agents.training import train
from rewardloop.learning.params import ConfigError
from rewardloop.simulator.agent_env import AgentSessionEnv

q_values = st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=8).map(np.array)


@given(q=q_values, step=st.integers(0, 10_000), temperature=st.floats(0.01, 10))
@settings(max_examples=200, deadline=None)
def test_propensities_are_distributions_that_favour_the_best(q: np.ndarray, step: int, temperature: float) -> None:
    for rule in (EpsilonGreedy(decay_steps=5_000), Boltzmann(temperature)):
        p = rule.probabilities(q, step)
        assert p.shape == q.shape
        assert p.min() >= 0.0
        assert math.isclose(p.sum(), 1.0, rel_tol=1e-9)
        assert p[np.argmax(q)] == pytest.approx(p.max())


def test_epsilon_greedy_ties_share_the_greedy_mass() -> None:
    p = EpsilonGreedy(start=0.2, end=0.2, decay_steps=0).probabilities(np.array([1.0, 3.0, 3.0, 0.0]), 0)
    np.testing.assert_allclose(p, [0.05, 0.45, 0.45, 0.05])


def test_choose_draws_with_the_stated_frequencies() -> None:
    rng = np.random.default_rng(0)
    p = np.array([0.1, 0.0, 0.6, 0.3])
    draws = [choose(p, rng) for _ in range(20_000)]
    counts = np.bincount([a for a, _ in draws], minlength=4) / len(draws)
    np.testing.assert_allclose(counts, p, atol=0.015)
    assert all(propensity == p[a] for a, propensity in draws)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"rule": "greedy"}, "exploration.rule must be one of"),
        ({"rule": "epsilon_greedy", "start": 1.5}, r"exploration.start must be in \[0, 1\]"),
        ({"rule": "epsilon_greedy", "start": 0.1, "end": 0.2}, "exploration.end must be <= exploration.start"),
        ({"rule": "boltzmann", "temperature": 0}, "exploration.temperature must be > 0"),
        ({"rule": "boltzmann", "temp": 1}, "unknown key"),
    ],
)
def test_bad_exploration_is_refused_naming_the_field(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        exploration_from_dict(spec)


def test_exploration_round_trips_through_a_dict() -> None:
    for rule in (EpsilonGreedy(0.9, 0.1, 77), Boltzmann(0.3)):
        assert exploration_from_dict(exploration_to_dict(rule)) == rule


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma": 1.0}, r"gamma must be in \(0, 1\)"),
        ({"learning_rate_power": 0.5}, "learning_rate_power"),
        ({"replay_ratio": -1}, "replay_ratio"),
        ({"n_states": 0}, "n_states"),
    ],
)
def test_bad_q_learning_configs_name_the_parameter(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QLearningConfig(**{"n_states": 4, "n_actions": 2, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden": ()}, "hidden must list"),
        ({"learning_rate": 0}, "learning_rate must be > 0"),
        ({"tau": 0}, r"tau must be in \(0, 1\]"),
        ({"batch_size": 0}, "batch_size"),
        ({"double": 1}, "double must be true or false"),
    ],
)
def test_bad_dqn_configs_name_the_parameter(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DQNConfig(**{"observation_size": 3, "n_actions": 2, **kwargs})


def test_the_replay_ring_overwrites_the_oldest_and_keeps_its_size() -> None:
    buffer = ReplayBuffer(capacity=4, observation_size=2)
    nbytes = buffer.nbytes
    for i in range(10):
        buffer.add(np.full(2, i), i % 3, float(i), np.full(2, i + 1), i % 2 == 0)
    assert len(buffer) == 4 and buffer.nbytes == nbytes
    assert sorted(buffer.rewards.tolist()) == [6.0, 7.0, 8.0, 9.0]
    again = ReplayBuffer.from_state(4, buffer.state())
    for name in ("observations", "next_observations", "actions", "rewards", "dones"):
        np.testing.assert_array_equal(getattr(again, name), getattr(buffer, name))
    assert (again.pos, again.full) == (buffer.pos, buffer.full)
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(2, 1).sample(1, np.random.default_rng(0))


def test_q_learning_without_replay_is_the_running_mean_of_its_targets() -> None:
    agent = QLearning(QLearningConfig(n_states=2, n_actions=2, gamma=0.5, replay_ratio=0))
    for reward in (1.0, 2.0, 6.0):
        agent.update(0, 1, reward, 1, done=True)
    assert agent.q[0, 1] == pytest.approx(3.0)
    agent.update(1, 0, 4.0, 0, done=False)  # bootstraps from max Q(0, .) = 3
    assert agent.q[1, 0] == pytest.approx(4.0 + 0.5 * 3.0)


def test_q_learning_tries_every_action_of_a_state_before_trusting_a_zero() -> None:
    agent = QLearning(QLearningConfig(n_states=1, n_actions=3, exploration=EpsilonGreedy(0.0, 0.0, 0), seed=0))
    agent.update(0, 0, 1.0, 0, done=True)
    tried = set()
    for untried in (2, 1):  # the untried actions share the greedy mass
        action, propensity = agent.act(0)
        assert action != 0 and propensity == 1.0 / untried
        agent.update(0, action, -1.0, 0, done=True)
        tried.add(action)
    assert tried == {1, 2}
    assert agent.act(0) == (0, 1.0)


def _dqn_run(seed: int, transitions: int, agent: DQN | None = None, start: int = 0) -> DQN:
    agent = agent or DQN(DQNConfig(observation_size=7, n_actions=5, learning_starts=32, seed=seed))
    rng = np.random.default_rng(1000 + seed)
    data = [
        (rng.random(7).astype(np.float32), int(rng.integers(5)), float(rng.random()), rng.random(7).astype(np.float32))
        for _ in range(transitions)
    ]
    for obs, action, reward, next_obs in data[start:]:
        agent.observe(obs, action, reward, next_obs, done=bool(reward > 0.8))
    return agent


def _same_weights(a: DQN, b: DQN) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip(a.q_network.state_dict().values(), b.q_network.state_dict().values(), strict=True)
    )


def test_dqn_is_deterministic_and_a_checkpoint_resumes_exactly() -> None:
    straight = _dqn_run(0, 300)
    assert _same_weights(straight, _dqn_run(0, 300))
    assert not _same_weights(straight, _dqn_run(1, 300))
    # Stop at 170 transitions, save, load, continue with the rest.
    half = _dqn_run(0, 170)
    resumed, extra = loads(dumps(half, extra={"stream": "170-0"}))
    assert isinstance(resumed, DQN) and extra == {"stream": "170-0"}
    _dqn_run(0, 300, agent=resumed, start=170)
    assert _same_weights(straight, resumed)
    assert resumed.gradient_steps == straight.gradient_steps
    assert all(
        torch.equal(x, y)
        for x, y in zip(
            straight.target_network.state_dict().values(), resumed.target_network.state_dict().values(), strict=True
        )
    )


def test_the_target_network_follows_on_its_schedule() -> None:
    agent = DQN(DQNConfig(observation_size=2, n_actions=2, learning_starts=4, batch_size=4, target_update_interval=3))
    rng = np.random.default_rng(0)
    for _ in range(5):  # 2 gradient steps: the target is still the initial network
        agent.observe(rng.random(2).astype(np.float32), 0, 1.0, rng.random(2).astype(np.float32), False)
    assert agent.gradient_steps == 2
    assert not _same_weights_target(agent)
    agent.observe(rng.random(2).astype(np.float32), 1, 0.0, rng.random(2).astype(np.float32), True)
    assert agent.gradient_steps == 3 and _same_weights_target(agent)


def _same_weights_target(agent: DQN) -> bool:
    online, target = agent.q_network.state_dict(), agent.target_network.state_dict()
    return all(torch.equal(online[k], target[k]) for k in online)


def test_double_dqn_values_the_online_choice_with_the_target_network() -> None:
    """One step by hand: the TD target DQN and Double DQN use differ exactly as the papers say."""
    for double in (False, True):
        agent = DQN(DQNConfig(observation_size=1, n_actions=2, hidden=(4,), double=double, batch_size=1, seed=3))
        with torch.no_grad():  # make the two networks disagree
            for p in agent.target_network.parameters():
                p.mul_(-1.5)
        obs, next_obs = np.array([0.3], np.float32), np.array([0.7], np.float32)
        agent.buffer.add(obs, 1, 0.5, next_obs, False)
        x = torch.as_tensor(next_obs).unsqueeze(0)
        with torch.no_grad():
            online_next, target_next = agent.q_network(x)[0], agent.target_network(x)[0]
            q_before = agent.q_network(torch.as_tensor(obs).unsqueeze(0))[0, 1].item()
        expected_next = target_next[online_next.argmax()] if double else target_next.max()
        target = 0.5 + agent.config.gamma * float(expected_next)
        loss = agent.train_step()
        error = q_before - target
        huber = 0.5 * error**2 if abs(error) < 1 else abs(error) - 0.5
        assert loss == pytest.approx(huber, rel=1e-5)


def test_a_tabular_checkpoint_resumes_exactly() -> None:
    env = AgentSessionEnv(seed=4)
    config = QLearningConfig(env.mdp.n_states, env.mdp.n_actions, seed=4)
    straight = QLearning(config)
    train(env, straight, 60, encode=env.mdp.state_of)
    env = AgentSessionEnv(seed=4)
    first = QLearning(config)
    train(env, first, 30, encode=env.mdp.state_of)
    resumed, _ = loads(dumps(first))
    assert isinstance(resumed, QLearning)
    train(env, resumed, 30, encode=env.mdp.state_of)
    np.testing.assert_array_equal(resumed.q, straight.q)
    np.testing.assert_array_equal(resumed.visits, straight.visits)


def test_a_checkpoint_of_another_format_is_refused() -> None:
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("hyperparameters.json", '{"format": 99}')
    with pytest.raises(ValueError, match="format 99"):
        loads(out.getvalue())
