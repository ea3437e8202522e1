"""The agent-session simulator: a valid gymnasium.Env whose tables are a proper MDP and whose optimum plans."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rewardloop.simulator.agent_env import ACTIONS, CLARIFY, STAY, AgentSessionEnv, SessionMDP


def test_the_environment_passes_gymnasiums_checker() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # render modes: the environment has none
        check_env(AgentSessionEnv(seed=0), skip_render_check=True)


def test_every_row_is_a_distribution_and_every_session_can_end() -> None:
    mdp = SessionMDP()
    assert mdp.transitions.min() >= 0.0
    stay = mdp.transitions.sum(axis=2)
    assert stay.max() <= max(STAY) + 1e-12
    assert stay.min() >= min(STAY) - 1e-12
    assert mdp.start.sum() == pytest.approx(1.0)
    for s in range(mdp.n_states):
        assert mdp.state_of(mdp.observe(s)) == s


def test_one_step_greed_is_far_from_the_optimum() -> None:
    mdp = SessionMDP()
    q = mdp.optimal_q()
    marks = mdp.benchmarks()
    assert marks["optimal"] == mdp.start_value(q.argmax(axis=1))
    assert marks["optimal"] > 1.5 * marks["one-step policy"]
    assert marks["optimal"] > 1.5 * marks["best fixed action"]
    assert marks["best fixed action"] == max(mdp.start_value(np.full(mdp.n_states, a)) for a in range(mdp.n_actions))
    # The optimum plans: it asks before answering where a one-step policy would not.
    planned = q.argmax(axis=1)
    assert (planned == CLARIFY).any()
    assert not (mdp.myopic_policy() == CLARIFY).any()


def test_value_iteration_is_the_fixed_point_and_beats_every_single_deviation() -> None:
    mdp = SessionMDP()
    for gamma in (0.9, 1.0):
        q = mdp.optimal_q(gamma)
        v = q.max(axis=1)
        np.testing.assert_allclose(q, mdp.rewards + gamma * mdp.transitions @ v, atol=1e-9)
        np.testing.assert_allclose(mdp.policy_values(q.argmax(axis=1), gamma), v, atol=1e-9)
    best = mdp.optimal_q().argmax(axis=1)
    top = mdp.start_value(best)
    for s in range(mdp.n_states):
        for a in range(mdp.n_actions):
            deviation = best.copy()
            deviation[s] = a
            assert mdp.start_value(deviation) <= top + 1e-9


def test_monte_carlo_returns_match_the_exact_value() -> None:
    """The sampled sessions follow the tables: 20,000 sessions of a fixed policy average to V^π."""
    env = AgentSessionEnv(seed=3)
    policy = env.mdp.optimal_q().argmax(axis=1)
    returns = []
    for _ in range(20_000):
        obs, _ = env.reset()
        total, done, truncated = 0.0, False, False
        while not (done or truncated):
            obs, reward, done, truncated, _ = env.step(int(policy[env.mdp.state_of(obs)]))
            total += reward
        returns.append(total)
    exact = env.mdp.start_value(policy)
    standard_error = np.std(returns) / np.sqrt(len(returns))
    assert abs(np.mean(returns) - exact) < 4 * standard_error


def test_same_seed_same_session_and_bad_actions_are_refused() -> None:
    def session(seed: int) -> list[tuple[float, int]]:
        env = AgentSessionEnv(seed=seed)
        env.reset(seed=seed)
        out = []
        for t in range(6):
            _, reward, done, truncated, info = env.step(t % len(ACTIONS))
            out.append((reward, info["state"]))
            if done or truncated:
                break
        return out

    assert session(5) == session(5)
    assert session(5) != session(6)
    env = AgentSessionEnv(seed=0)
    env.reset()
    with pytest.raises(ValueError, match="action must be in"):
        env.step(len(ACTIONS))
    with pytest.raises(ValueError, match="reward_noise"):
        AgentSessionEnv(reward_noise=-1)


def test_a_long_session_is_truncated_not_terminated() -> None:
    env = AgentSessionEnv(seed=0, max_turns=2)
    policy = env.mdp.optimal_q().argmax(axis=1)
    truncations = 0
    for _ in range(200):
        obs, _ = env.reset()
        for turn in range(2):
            obs, _, done, truncated, _ = env.step(int(policy[env.mdp.state_of(obs)]))
            assert not (done and truncated)
            if done:
                break
            assert truncated == (turn == 1)
            truncations += truncated
    assert truncations > 0
