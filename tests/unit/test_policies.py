"""Configs, registry, golden values and propensity correctness of the bandit policies."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
from scipy import integrate, stats

import rewardloop.learning.bandits as policies
from rewardloop.learning.bandits import (
    ALGORITHMS,
    EXP3,
    UCB1,
    ConfigError,
    DiscountedLinUCB,
    DiscountedThompson,
    DiscountedUCB,
    EpsilonGreedy,
    GaussianThompson,
    HybridLinUCB,
    LinTS,
    LinUCB,
    Policy,
    PolicyConfig,
    PolicyState,
    SlidingWindowUCB,
    Softmax,
    Thompson,
    config_from_dict,
    make_policy,
)
from rewardloop.learning.bandits.slates import NO_CONTEXT
from rewardloop.learning.bandits.thompson import ThompsonPolicy, _beta_draws

# Algorithms keeping the base bookkeeping: undiscounted per-arm counts and reward sums.
COUNT_BASED = ["epsilon_greedy", "gaussian_thompson", "softmax", "thompson", "ucb1"]


def with_rewards(policy: Policy, rewards: dict[int, list[float]]) -> PolicyState:
    state = policy.new_state()
    for arm, arm_rewards in rewards.items():
        for reward in arm_rewards:
            policy.update(state, arm, reward)
    return state


def slate(policy: Policy, state: PolicyState, available: list[int], n: int, seed: int = 0) -> list[tuple]:
    chosen = policy.select(state, np.array(available), n, np.random.default_rng(seed))
    return [(c.arm, c.score, c.propensity) for c in chosen]


# --- public surface and registry -------------------------------------------------------


def test_public_api() -> None:
    assert set(policies.__all__) == {
        *("PolicyConfig", "Policy", "PolicyState", "Choice", "ConfigError"),
        *("EpsilonGreedy", "UCB1", "Thompson", "GaussianThompson", "Softmax", "EXP3"),
        *("LinUCB", "HybridLinUCB", "LinTS"),
        *("DiscountedUCB", "SlidingWindowUCB", "DiscountedThompson", "DiscountedLinUCB"),
        *("config_from_dict", "make_policy", "policy_class", "ALGORITHMS"),
    }
    assert {
        "epsilon_greedy": EpsilonGreedy,
        "thompson": Thompson,
        "ucb1": UCB1,
        "gaussian_thompson": GaussianThompson,
        "softmax": Softmax,
        "exp3": EXP3,
        "linucb": LinUCB,
        "hybrid_linucb": HybridLinUCB,
        "lin_ts": LinTS,
        "discounted_ucb": DiscountedUCB,
        "sliding_window_ucb": SlidingWindowUCB,
        "discounted_thompson": DiscountedThompson,
        "discounted_linucb": DiscountedLinUCB,
    } == ALGORITHMS
    assert issubclass(ConfigError, ValueError)


def test_capabilities() -> None:
    def names(flag: str) -> set[str]:
        return {name for name in ALGORITHMS if getattr(_implementation(name), flag)}

    assert names("contextual") == {"linucb", "hybrid_linucb", "lin_ts", "discounted_linucb"}
    assert names("needs_propensity") == {"exp3"}
    assert names("supports_prior") == {
        *("epsilon_greedy", "ucb1", "thompson", "gaussian_thompson", "softmax"),
        *("linucb", "hybrid_linucb", "lin_ts"),
    }


def _implementation(name: str) -> type[Policy]:
    return type(make_policy(ALGORITHMS[name](), 2, context_dim=1, arm_features=np.ones((2, 1))))


@pytest.mark.parametrize(
    ("config", "params"),
    [
        (EpsilonGreedy(), {"epsilon": 0.1, "initial_mean": 1.0}),
        (UCB1(), {"c": 1.0, "tuned": True}),
        (Thompson(), {"prior_alpha": 1.0, "prior_beta": 1.0, "samples": 64}),
        (
            GaussianThompson(),
            {"prior_mean": 0.5, "prior_precision": 1.0, "noise_variance": 0.25, "samples": 64},
        ),
        (Softmax(), {"temperature": 0.1, "initial_mean": 1.0}),
        (EXP3(), {"gamma": 0.1}),
        (LinUCB(), {"alpha": 1.0, "ridge": 1.0}),
        (HybridLinUCB(), {"alpha": 1.0, "ridge": 1.0}),
        (LinTS(), {"v": 0.25, "ridge": 1.0, "samples": 64}),
        (DiscountedUCB(), {"gamma": 0.98, "c": 0.5}),
        (SlidingWindowUCB(), {"window": 200, "c": 0.5}),
        (DiscountedThompson(), {"gamma": 0.99, "prior_alpha": 1.0, "prior_beta": 1.0, "samples": 64}),
        (DiscountedLinUCB(), {"alpha": 1.0, "ridge": 1.0, "gamma": 0.99}),
    ],
)
def test_defaults(config: PolicyConfig, params: dict[str, Any]) -> None:
    assert config.to_dict() == params
    assert config_from_dict(config.name) == config_from_dict(config.name, {}) == config


def test_values_are_normalised_so_dicts_are_canonical() -> None:
    config = config_from_dict("ucb1", {"c": 2})
    assert config == UCB1(c=2.0)
    assert type(config.to_dict()["c"]) is float
    assert type(Thompson(samples=np.int64(8)).samples) is int  # type: ignore[arg-type]
    assert type(EpsilonGreedy(epsilon=np.float32(0.5)).epsilon) is float  # type: ignore[arg-type]


def test_configs_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        UCB1(1.0)  # type: ignore[call-arg]


KNOWN = (
    "discounted_linucb, discounted_thompson, discounted_ucb, epsilon_greedy, exp3, gaussian_thompson, "
    "hybrid_linucb, lin_ts, linucb, sliding_window_ucb, softmax, thompson, ucb1"
)
BAD_CONFIGS = [
    ("foo", {}, rf"^unknown algorithm 'foo'; known: {KNOWN}$"),
    (None, {}, rf"^unknown algorithm None; known: {KNOWN}$"),
    ("ucb1", {"alpha": 1.0}, r"^unknown parameter 'alpha' for ucb1; known: c, tuned$"),
    (
        "thompson",
        {"epsilon": 0.1},
        r"^unknown parameter 'epsilon' for thompson; known: prior_alpha, prior_beta",
    ),
    ("ucb1", {"c": -1}, r"^c must be > 0, got -1$"),
    ("ucb1", {"c": 0.0}, r"^c must be > 0, got 0.0$"),
    ("ucb1", {"c": float("nan")}, r"^c must be > 0, got nan$"),
    ("ucb1", {"c": float("inf")}, r"^c must be finite, got inf$"),
    ("ucb1", {"c": "1.5"}, r"^c must be a real number, got '1.5'$"),
    ("ucb1", {"c": True}, r"^c must be a real number, got True$"),
    ("ucb1", {"c": None}, r"^c must be a real number, got None$"),
    ("epsilon_greedy", {"epsilon": 1.2}, r"^epsilon must be in \[0, 1\], got 1.2$"),
    ("epsilon_greedy", {"epsilon": -0.1}, r"^epsilon must be in \[0, 1\], got -0.1$"),
    ("epsilon_greedy", {"epsilon": float("nan")}, r"^epsilon must be in \[0, 1\], got nan$"),
    ("epsilon_greedy", {"initial_mean": 2}, r"^initial_mean must be in \[0, 1\], got 2$"),
    ("thompson", {"prior_alpha": 0}, r"^prior_alpha must be > 0, got 0$"),
    ("thompson", {"prior_beta": -1.0}, r"^prior_beta must be > 0, got -1.0$"),
    ("thompson", {"samples": 0}, r"^samples must be in \[1, 10000\], got 0$"),
    ("thompson", {"samples": 10_001}, r"^samples must be in \[1, 10000\], got 10001$"),
    ("thompson", {"samples": 2.5}, r"^samples must be an integer, got 2.5$"),
    ("thompson", {"samples": 64.0}, r"^samples must be an integer, got 64.0$"),
    ("gaussian_thompson", {"prior_mean": 1.5}, r"^prior_mean must be in \[0, 1\], got 1.5$"),
    ("gaussian_thompson", {"prior_precision": 0}, r"^prior_precision must be > 0, got 0$"),
    ("gaussian_thompson", {"noise_variance": -0.25}, r"^noise_variance must be > 0, got -0.25$"),
    ("gaussian_thompson", {"samples": 0}, r"^samples must be in \[1, 10000\], got 0$"),
    ("softmax", {"temperature": 0}, r"^temperature must be > 0, got 0$"),
    ("softmax", {"temperature": float("inf")}, r"^temperature must be finite, got inf$"),
    ("softmax", {"initial_mean": -0.5}, r"^initial_mean must be in \[0, 1\], got -0.5$"),
    ("exp3", {"gamma": 0}, r"^gamma must be in \(0, 1\], got 0$"),
    ("exp3", {"gamma": 1.01}, r"^gamma must be in \(0, 1\], got 1.01$"),
    ("exp3", {"gamma": "0.1"}, r"^gamma must be a real number, got '0.1'$"),
    ("linucb", {"alpha": 0}, r"^alpha must be > 0, got 0$"),
    ("linucb", {"ridge": -1}, r"^ridge must be > 0, got -1$"),
    ("linucb", {"lambda": 1}, r"^unknown parameter 'lambda' for linucb; known: ridge, alpha$"),
    ("hybrid_linucb", {"alpha": float("nan")}, r"^alpha must be > 0, got nan$"),
    ("hybrid_linucb", {"ridge": 0.0}, r"^ridge must be > 0, got 0.0$"),
    ("lin_ts", {"v": 0}, r"^v must be > 0, got 0$"),
    ("lin_ts", {"ridge": float("inf")}, r"^ridge must be finite, got inf$"),
    ("lin_ts", {"samples": 1.5}, r"^samples must be an integer, got 1.5$"),
    ("discounted_ucb", {"gamma": 1}, r"^gamma must be in \(0, 1\), got 1$"),
    ("discounted_ucb", {"gamma": 0.0}, r"^gamma must be in \(0, 1\), got 0.0$"),
    ("discounted_ucb", {"c": -0.5}, r"^c must be > 0, got -0.5$"),
    ("sliding_window_ucb", {"window": 0}, r"^window must be in \[1, 100000\], got 0$"),
    ("sliding_window_ucb", {"window": 20.0}, r"^window must be an integer, got 20.0$"),
    ("discounted_thompson", {"gamma": 1.5}, r"^gamma must be in \(0, 1\), got 1.5$"),
    ("discounted_thompson", {"prior_beta": 0}, r"^prior_beta must be > 0, got 0$"),
    ("discounted_linucb", {"gamma": -0.1}, r"^gamma must be in \(0, 1\), got -0.1$"),
    ("discounted_linucb", {"alpha": 0}, r"^alpha must be > 0, got 0$"),
]


@pytest.mark.parametrize(("name", "params", "match"), BAD_CONFIGS)
def test_bad_configs_name_the_parameter(name: str, params: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict(name, params)


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ConfigError, match=r"epsilon must be in \[0, 1\], got 1.2"):
        EpsilonGreedy(epsilon=1.2)


def test_make_policy_rejects_unregistered_config() -> None:
    class Unregistered(PolicyConfig):
        name = "unregistered"

    with pytest.raises(ConfigError, match="no policy registered for config type Unregistered"):
        make_policy(Unregistered(), n_arms=3)


# --- UCB1 golden values ------------------------------------------------------------------


def test_ucb1_scores_by_hand() -> None:
    policy = make_policy(UCB1(c=1.0, tuned=False), n_arms=4)
    state = with_rewards(policy, {0: [1.0, 0.0], 1: [1.0], 2: [0.0]})
    # N = 4 pulls; bonus sqrt(ln 4 / n_i): n=2 -> 0.83255461, n=1 -> 1.17741002.
    assert slate(policy, state, [0, 1, 2, 3], n=4) == [
        (3, math.inf, 1.0),  # unplayed first
        (1, pytest.approx(1.0 + 1.1774100225154747), 1.0),
        (0, pytest.approx(0.5 + 0.8325546111576977), 1.0),
        (2, pytest.approx(0.0 + 1.1774100225154747), 1.0),
    ]


def test_ucb1_total_pulls_include_arms_not_available() -> None:
    policy = make_policy(UCB1(c=0.5, tuned=False), n_arms=3)
    state = with_rewards(policy, {0: [0.5], 1: [0.25, 0.25], 2: [1.0] * 5})
    # N = 8: scores 0.5 + 0.5 sqrt(ln 8) and 0.25 + 0.5 sqrt(ln 8 / 2).
    assert slate(policy, state, [1, 0], n=2) == [
        (0, pytest.approx(0.5 + 0.5 * math.sqrt(math.log(8))), 1.0),
        (1, pytest.approx(0.25 + 0.5 * math.sqrt(math.log(8) / 2)), 1.0),
    ]


def test_ucb1_splits_ties_evenly() -> None:
    policy = make_policy(UCB1(), n_arms=5)
    fresh = policy.new_state()
    # Exact: 1 / ties is one correctly rounded division, in the policy as here.
    assert [p for _, _, p in slate(policy, fresh, [0, 1, 2, 3], n=4)] == [1 / 4, 1 / 3, 1 / 2, 1.0]
    twins = with_rewards(policy, {0: [1.0], 1: [0.5], 2: [0.5], 3: [0.0], 4: [0.0]})
    first = slate(policy, twins, [1, 2, 3], n=1)[0]
    assert first[0] in (1, 2) and first[2] == 0.5
    arms = Counter(slate(policy, twins, [1, 2, 3], n=1, seed=seed)[0][0] for seed in range(400))
    assert set(arms) == {1, 2} and 160 < arms[1] < 240  # 400 fair coins: 4.0 sigma


def test_ucb1_tuned_scores_by_hand() -> None:
    policy = make_policy(UCB1(c=1.0), n_arms=4)
    state = with_rewards(policy, {0: [1.0, 0.0, 1.0, 1.0], 1: [0.0] * 8, 2: [0.5]})
    # 13 own updates: ln(14) = 2.6391; arm 0: mean 0.75, V = 0.1875 + sqrt(2 * 2.6391 / 4) > 1/4;
    # arm 1: mean 0, V = 0 + sqrt(2 * 2.6391 / 8) = 0.8122 > 1/4; arm 2: mean 0.5, V > 1/4.
    log_n = math.log(14)
    assert slate(policy, state, [0, 1, 2, 3], n=4) == [
        (3, math.inf, 1.0),
        (2, pytest.approx(0.5 + math.sqrt(log_n / 1 * 0.25)), 1.0),
        (0, pytest.approx(0.75 + math.sqrt(log_n / 4 * 0.25)), 1.0),
        (1, pytest.approx(0.0 + math.sqrt(log_n / 8 * 0.25)), 1.0),
    ]
    many = with_rewards(policy, {0: [1.0] * 100 + [0.0] * 900})
    # A well-observed arm's bonus follows its own spread: V = 0.09 + sqrt(2 ln(1001) / 1000) < 1/4.
    spread = 0.09 + math.sqrt(2 * math.log(1001) / 1000)
    [(_, score, _)] = slate(policy, many, [0], n=1)
    assert score == pytest.approx(0.1 + math.sqrt(math.log(1001) / 1000 * spread))


def test_ucb1_tuned_counts_only_the_users_own_updates_so_a_prior_is_served_greedily() -> None:
    policy = make_policy(UCB1(), n_arms=3)
    rates = {0: 10, 1: 30, 2: 5}  # clicks in 100 plays
    population = with_rewards(policy, {arm: [1.0] * k + [0.0] * (100 - k) for arm, k in rates.items()})
    fresh = policy.combine(policy.new_state(), population, 2.0)
    # No own updates: ln(1) = 0, no bonus, the prior's best arm first with its prior mean.
    assert slate(policy, fresh, [0, 1, 2], n=3) == [
        (1, pytest.approx(0.3), 1.0), (0, pytest.approx(0.1), 1.0), (2, pytest.approx(0.05), 1.0),
    ]  # fmt: skip
    textbook = make_policy(UCB1(tuned=False), n_arms=3)
    # The textbook bonus counts the 6 pseudo-observations as plays: every arm gets sqrt(ln 6 / 2).
    [(_, score, _)] = slate(textbook, fresh, [2], n=1)
    assert score == pytest.approx(0.05 + math.sqrt(math.log(6) / 2))


def test_ucb1_with_a_single_pull_has_no_bonus() -> None:
    policy = make_policy(UCB1(tuned=False), n_arms=2)
    state = with_rewards(policy, {0: [0.75]})
    assert slate(policy, state, [0, 1], n=2) == [(1, math.inf, 1.0), (0, 0.75, 1.0)]  # ln 1 = 0


# --- epsilon-greedy golden values --------------------------------------------------------


def test_epsilon_greedy_propensities_by_hand() -> None:
    policy = make_policy(EpsilonGreedy(epsilon=0.3, initial_mean=0.0), n_arms=4)
    state = with_rewards(policy, {0: [0.2], 1: [0.9], 2: [0.9], 3: [0.1]})
    rule = policy._slate_rule(state, np.arange(4), np.random.default_rng(0), NO_CONTEXT)
    scores, probabilities = rule(np.arange(4))
    assert scores.tolist() == [0.2, 0.9, 0.9, 0.1]
    # 0.3 / 4 everywhere plus 0.7 split between the two greedy arms.
    assert probabilities == pytest.approx([0.075, 0.425, 0.425, 0.075])
    _, probabilities = rule(np.array([0, 2, 3]))  # arm 1 taken: arm 2 is the only greedy one
    assert probabilities == pytest.approx([0.1, 0.8, 0.1])
    for seed in range(20):
        (first, _, p1), (second, _, p2) = slate(policy, state, [0, 1, 2, 3], n=2, seed=seed)
        assert p1 == pytest.approx(0.425 if first in (1, 2) else 0.075)
        # Three arms left: 0.1 each, plus 0.7 for the greedy arm(s) among them.
        greedy_left = 2 if first in (0, 3) else 1
        assert p2 == pytest.approx(0.1 + 0.7 / greedy_left if second in (1, 2) else 0.1), (first, second)


def test_epsilon_greedy_initial_mean_sets_optimism() -> None:
    for initial_mean, first in ((1.0, 1), (0.0, 0)):
        policy = make_policy(EpsilonGreedy(epsilon=0.0, initial_mean=initial_mean), n_arms=2)
        state = with_rewards(policy, {0: [0.8]})
        assert slate(policy, state, [0, 1], n=1) == [(first, [0.8, initial_mean][first], 1.0)]


def test_epsilon_one_is_uniform() -> None:
    policy = make_policy(EpsilonGreedy(epsilon=1.0), n_arms=5)
    state = with_rewards(policy, {0: [1.0], 3: [0.0]})
    assert [p for _, _, p in slate(policy, state, [0, 1, 2, 3, 4], n=5)] == pytest.approx(
        [1 / 5, 1 / 4, 1 / 3, 1 / 2, 1.0]
    )


# --- Thompson golden values --------------------------------------------------------------


def test_thompson_posterior_by_hand() -> None:
    policy = make_policy(Thompson(prior_alpha=2.0, prior_beta=3.0), n_arms=3)
    assert isinstance(policy, ThompsonPolicy)
    state = with_rewards(policy, {0: [1.0, 0.5, 0.0], 1: [1.0]})
    alpha, beta = policy.posterior(state)
    assert alpha.tolist() == [3.5, 3.0, 2.0]  # prior_alpha + reward sum
    assert beta.tolist() == [4.5, 3.0, 3.0]  # prior_beta + count - reward sum
    scores = {arm: score for arm, score, _ in slate(policy, state, [0, 1, 2], n=3)}
    # Posterior means: exact, alpha + beta is a dyadic sum and alpha / (alpha + beta) one division.
    assert scores == {0: 3.5 / 8, 1: 0.5, 2: 0.4}


def test_thompson_propensities_are_multiples_of_one_over_k() -> None:
    policy = make_policy(Thompson(samples=8), n_arms=6)
    state = with_rewards(policy, {0: [1.0, 0.0], 1: [1.0], 2: [0.0, 0.0]})
    for seed in range(30):
        for _, _, propensity in slate(policy, state, list(range(6)), n=3, seed=seed):
            assert (propensity * 8).is_integer()


def test_thompson_certain_posterior_gives_propensity_one() -> None:
    policy = make_policy(Thompson(), n_arms=3)
    state = with_rewards(policy, {0: [0.0] * 500, 1: [1.0] * 500, 2: [0.0] * 500})
    assert [(arm, p) for arm, _, p in slate(policy, state, [0, 1, 2], n=1)] == [(1, 1.0)]
    one_sample = make_policy(Thompson(samples=1), n_arms=3)
    assert all(p == 1.0 for _, _, p in slate(one_sample, one_sample.new_state(), [0, 1, 2], n=3))


@pytest.mark.parametrize(("a", "b"), [(1.0, 1.0), (3.0, 2.0), (0.5, 0.5), (0.3, 4.0)])
def test_beta_draws_follow_the_beta_distribution(a: float, b: float) -> None:
    # Shapes >= 1 use the gamma ratio, shapes < 1 numpy's beta: both must be Beta(a, b).
    draws = _beta_draws(np.array([a, 1.0]), np.array([b, 1.0]), 4000, np.random.default_rng(7))
    assert draws.shape == (4000, 2)
    assert stats.kstest(draws[:, 0], stats.beta(a, b).cdf).pvalue > 0.001


# --- propensities are the probabilities of the draws made ---------------------------------


def test_epsilon_greedy_empirical_frequencies_match_propensities() -> None:
    policy = make_policy(EpsilonGreedy(epsilon=0.4), n_arms=5)
    state = with_rewards(policy, {0: [0.3], 1: [0.9], 2: [0.5], 3: [0.1], 4: [0.0]})
    rng = np.random.default_rng(11)
    draws = 10_000
    first: Counter[int] = Counter()
    reported: dict[int, set[float]] = {}
    second_after_greedy: Counter[int] = Counter()
    reported_second: dict[int, float] = {}
    for _ in range(draws):
        one, two = policy.select(state, np.arange(5), 2, rng)
        first[one.arm] += 1
        reported.setdefault(one.arm, set()).add(one.propensity)
        if one.arm == 1:
            second_after_greedy[two.arm] += 1
            reported_second[two.arm] = two.propensity
    expected = {arm: 0.08 + (0.6 if arm == 1 else 0.0) for arm in range(5)}
    for arm in range(5):
        assert len(reported[arm]) == 1 and reported[arm].pop() == pytest.approx(expected[arm])
        margin = 4 * math.sqrt(expected[arm] * (1 - expected[arm]) / draws)
        assert abs(first[arm] / draws - expected[arm]) < margin, arm
    # Given arm 1 went first, arm 2 (mean 0.5) is greedy among the rest: 0.1 + 0.6.
    given = first[1]
    for arm, propensity in reported_second.items():
        assert propensity == pytest.approx(0.7 if arm == 2 else 0.1)
        margin = 4 * math.sqrt(propensity * (1 - propensity) / given)
        assert abs(second_after_greedy[arm] / given - propensity) < margin, arm


def exact_thompson_probabilities(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """P(arm i has the largest posterior draw) = integral of f_i(x) * prod_j!=i F_j(x)."""
    posteriors = [stats.beta(a, b) for a, b in zip(alpha, beta, strict=True)]

    def integrand(x: float, i: int) -> float:
        others = math.prod(p.cdf(x) for j, p in enumerate(posteriors) if j != i)
        return float(posteriors[i].pdf(x) * others)

    return np.array([integrate.quad(integrand, 0, 1, args=(i,))[0] for i in range(len(posteriors))])


@pytest.mark.parametrize("prior", [1.0, 0.5])
def test_thompson_empirical_frequencies_match_propensities(prior: float) -> None:
    policy = make_policy(Thompson(prior_alpha=prior, prior_beta=prior, samples=16), n_arms=3)
    state = with_rewards(policy, {0: [1.0, 1.0, 1.0, 0.0, 0.0], 1: [1.0, 0.0]})
    assert isinstance(policy, ThompsonPolicy)
    exact = exact_thompson_probabilities(*policy.posterior(state))
    assert exact.sum() == pytest.approx(1.0, abs=1e-6)
    arms = np.arange(3)
    draws = 6_000
    counts = np.zeros(3)
    mean_probabilities = np.zeros(3)
    for seed in range(draws):
        choice = policy.select(state, arms, 1, np.random.default_rng(seed))[0]
        # The same seed replays the slate's posterior samples (drawn before the slot draw).
        _, probabilities = policy._slate_rule(state, arms, np.random.default_rng(seed), NO_CONTEXT)(arms)
        assert choice.propensity == probabilities[choice.arm]  # exact, given the samples
        counts[choice.arm] += 1
        mean_probabilities += probabilities / draws
    margin = 4 * np.sqrt(exact * (1 - exact) / draws)
    # Picking one of K posterior samples uniformly is Thompson sampling: both the draws and
    # the average conditional probability match P(arm is the argmax of one posterior draw).
    assert np.all(np.abs(counts / draws - exact) < margin), (counts / draws, exact)
    assert np.all(np.abs(mean_probabilities - exact) < margin), (mean_probabilities, exact)


# --- state checks specific to the count / reward-sum bookkeeping --------------------------


@pytest.mark.parametrize(
    ("counts", "sums", "n_updates", "match"),
    [
        ([-1.0, 2.0], [0.0, 1.0], 1, r"need 0 <= reward_sums <= counts"),
        ([1.0, 1.0], [0.5, 1.5], 2, r"need 0 <= reward_sums <= counts"),
        ([1.0, 1.0], [-0.5, 1.0], 2, r"need 0 <= reward_sums <= counts"),
        ([np.inf, 1.0], [0.5, 1.0], 3, r"non-finite"),
    ],
)
def test_load_state_rejects_states_no_updates_produce(
    counts: list[float], sums: list[float], n_updates: int, match: str
) -> None:
    for name in COUNT_BASED:
        policy = make_policy(ALGORITHMS[name](), n_arms=2)
        state = PolicyState({"counts": np.array(counts), "reward_sums": np.array(sums)}, n_updates)
        with pytest.raises(ValueError, match=f"corrupt {name} policy state: {match}"):
            policy.load_state(policy.dump_state(state))


def test_weighted_counts_load_for_additive_policies_only() -> None:
    """Time decay weighs updates, so an additive state's counts need not sum to n_updates."""
    for name in COUNT_BASED:
        policy = make_policy(ALGORITHMS[name](), n_arms=2)
        state = policy.new_state()
        policy.update(state, 0, 1.0, weight=2.5)
        assert policy.load_state(policy.dump_state(state)) == state
    sliding = make_policy(ALGORITHMS["sliding_window_ucb"](), n_arms=2)
    with pytest.raises(ValueError, match="sliding_window_ucb does not take weighted updates"):
        sliding.update(sliding.new_state(), 0, 1.0, weight=2.0)


def test_policy_state_equality_is_bitwise() -> None:
    state = PolicyState({"counts": np.array([1.0, 0.0])}, 1)
    assert state == state.copy()
    assert state != PolicyState({"counts": np.array([1.0, -0.0])}, 1)
    assert state != PolicyState({"counts": np.array([1.0, 0.0])}, 2)
    assert state != PolicyState({"counts": np.array([1, 0])}, 1)
    assert state != "state"


# --- softmax golden values ---------------------------------------------------------------


def test_softmax_probabilities_by_hand() -> None:
    policy = make_policy(Softmax(temperature=0.5, initial_mean=0.25), n_arms=4)
    state = with_rewards(policy, {0: [1.0, 0.5], 1: [0.5], 2: [0.0]})
    rule = policy._slate_rule(state, np.arange(4), np.random.default_rng(0), NO_CONTEXT)
    scores, probabilities = rule(np.arange(4))
    assert scores.tolist() == [0.75, 0.5, 0.0, 0.25]  # arm 3 unplayed: initial_mean
    weights = np.exp(np.array([0.75, 0.5, 0.0, 0.25]) / 0.5)
    assert probabilities == pytest.approx(weights / weights.sum(), rel=1e-12)
    _, probabilities = rule(np.array([1, 2]))
    assert probabilities == pytest.approx([math.e / (math.e + 1), 1 / (math.e + 1)], rel=1e-12)


def test_softmax_temperature_moves_between_greedy_and_uniform() -> None:
    for temperature, first in ((1e-3, [1.0, 0.0, 0.0]), (1e3, [1 / 3] * 3)):
        policy = make_policy(Softmax(temperature=temperature), n_arms=3)
        state = with_rewards(policy, {0: [0.9], 1: [0.5], 2: [0.1]})
        rule = policy._slate_rule(state, np.arange(3), np.random.default_rng(0), NO_CONTEXT)
        _, probabilities = rule(np.arange(3))
        assert probabilities == pytest.approx(first, abs=1e-3)
        assert np.all(probabilities >= 0.0) and probabilities.sum() == pytest.approx(1.0)


# --- Gaussian Thompson golden values -------------------------------------------------------


def test_gaussian_thompson_posterior_by_hand() -> None:
    policy = make_policy(GaussianThompson(prior_mean=0.2, prior_precision=2.0, noise_variance=0.5), n_arms=3)
    state = with_rewards(policy, {0: [1.0, 0.5, 0.0], 1: [0.8]})
    mean, sd = policy.posterior(state)  # type: ignore[attr-defined]
    # precision = 2 + n / 0.5; mean = (2 * 0.2 + sum / 0.5) / precision
    assert mean == pytest.approx([(0.4 + 3.0) / 8.0, (0.4 + 1.6) / 4.0, 0.2])
    assert sd == pytest.approx([8.0**-0.5, 4.0**-0.5, 2.0**-0.5])
    scores = {arm: score for arm, score, _ in slate(policy, state, [0, 1, 2], n=3)}
    assert scores == pytest.approx({0: 3.4 / 8.0, 1: 0.5, 2: 0.2})


def exact_gaussian_argmax_probabilities(mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """P(arm i has the largest of independent normal draws) = integral of pdf_i * prod_j!=i cdf_j."""

    def integrand(x: float, i: int) -> float:
        others = math.prod(stats.norm.cdf(x, mean[j], sd[j]) for j in range(len(mean)) if j != i)
        return float(stats.norm.pdf(x, mean[i], sd[i]) * others)

    return np.array([integrate.quad(integrand, -np.inf, np.inf, args=(i,))[0] for i in range(len(mean))])


def test_gaussian_thompson_empirical_frequencies_match_the_posterior() -> None:
    policy = make_policy(GaussianThompson(samples=16), n_arms=3)
    state = with_rewards(policy, {0: [1.0, 0.0, 1.0], 1: [0.5, 0.5]})
    exact = exact_gaussian_argmax_probabilities(*policy.posterior(state))  # type: ignore[attr-defined]
    draws = 4_000
    first_arms = [slate(policy, state, [0, 1, 2], n=1, seed=seed)[0][0] for seed in range(draws)]
    counts = np.bincount(first_arms, minlength=3)
    margin = 4 * np.sqrt(exact * (1 - exact) / draws)
    assert np.all(np.abs(counts / draws - exact) < margin), (counts / draws, exact)
    for seed in range(30):
        for _, _, propensity in slate(policy, state, [0, 1, 2], n=2, seed=seed):
            assert (propensity * 16).is_integer()


# --- EXP3 golden values ----------------------------------------------------------------------


def test_exp3_weights_and_probabilities_by_hand() -> None:
    policy = make_policy(EXP3(gamma=0.3), n_arms=3)
    state = policy.new_state()
    policy.update(state, 1, 0.6, propensity=0.4)
    policy.update(state, 2, 0.0, propensity=0.1)  # no reward: no change
    assert state.arrays["log_weights"].tolist() == [0.0, pytest.approx(0.3 * (0.6 / 0.4) / 3), 0.0]
    rule = policy._slate_rule(state, np.arange(3), np.random.default_rng(0), NO_CONTEXT)
    scores, probabilities = rule(np.arange(3))
    assert scores.tolist() == [0.0, pytest.approx(0.15), 0.0]  # the log-weights
    w = math.exp(0.15)
    assert probabilities == pytest.approx([0.7 / (w + 2) + 0.1, 0.7 * w / (w + 2) + 0.1, 0.7 / (w + 2) + 0.1])
    _, probabilities = rule(np.array([0, 2]))  # equal weights: uniform, whatever gamma
    assert probabilities == pytest.approx([0.5, 0.5])


def test_exp3_is_stable_with_huge_log_weights() -> None:
    policy = make_policy(EXP3(gamma=0.1), n_arms=3)
    state = PolicyState({"log_weights": np.array([1_000.0, 0.0, 1_000.5])}, n_updates=5_000)
    assert policy.load_state(policy.dump_state(state)) == state
    rule = policy._slate_rule(state, np.arange(3), np.random.default_rng(0), NO_CONTEXT)
    _, probabilities = rule(np.arange(3))
    odds, floor = math.exp(0.5), 0.1 / 3
    assert probabilities == pytest.approx([0.9 / (1 + odds) + floor, floor, 0.9 * odds / (1 + odds) + floor])
    slate_of_three = policy.select(state, np.arange(3), 3, np.random.default_rng(0))
    assert all(choice.propensity >= floor for choice in slate_of_three)


# --- discounted and sliding-window golden values ------------------------------------------


def test_discounted_ucb_counts_by_hand() -> None:
    policy = make_policy(DiscountedUCB(gamma=0.9, c=0.5), n_arms=3)
    state = with_rewards(policy, {0: [1.0, 0.0], 1: [1.0]})  # updates: (0, 1), (0, 0), (1, 1)
    assert state.arrays["counts"] == pytest.approx([0.81 + 0.9, 1.0, 0.0])
    assert state.arrays["reward_sums"] == pytest.approx([0.81, 1.0, 0.0])
    total = 2.71
    assert slate(policy, state, [0, 1, 2], n=3) == [
        (2, math.inf, 1.0),
        (1, pytest.approx(1.0 + 0.5 * math.sqrt(math.log(total) / 1.0)), 1.0),
        (0, pytest.approx(0.81 / 1.71 + 0.5 * math.sqrt(math.log(total) / 1.71)), 1.0),
    ]


def test_discounted_ucb_explores_an_arm_left_alone_again() -> None:
    log = {1: [0.0] * 20, 0: [1.0] * 200}
    policy = make_policy(DiscountedUCB(gamma=0.9, c=0.5), n_arms=2)
    state = with_rewards(policy, log)
    assert state.arrays["counts"].sum() == pytest.approx(10.0)  # sum of 0.9^k -> 1 / (1 - 0.9)
    assert state.arrays["counts"][1] == pytest.approx(0.9**200 * (1 - 0.9**20) / 0.1)
    # Arm 1's 20 failures are 200+ updates old: its bonus now beats arm 0's perfect record...
    assert slate(policy, state, [0, 1], n=1)[0][0] == 1
    # ... where UCB1 still trusts them: 0.5 sqrt(ln 220 / 20) = 0.26 < 1 + 0.5 sqrt(ln 220 / 200).
    undiscounted = make_policy(UCB1(c=0.5), n_arms=2)
    assert slate(undiscounted, with_rewards(undiscounted, log), [0, 1], n=1)[0][0] == 0


def test_sliding_window_keeps_only_the_last_updates() -> None:
    policy = make_policy(SlidingWindowUCB(window=4, c=0.5), n_arms=3)
    log = [(0, 1.0), (0, 1.0), (1, 0.5), (2, 0.0), (1, 1.0), (1, 0.0)]
    state = policy.new_state()
    for arm, reward in log:
        policy.update(state, arm, reward)
    # Window: the last 4 updates; updates 4 and 5 overwrote positions 0 and 1.
    assert state.arrays["window_arms"].tolist() == [1, 1, 1, 2]
    assert state.arrays["window_rewards"].tolist() == [1.0, 0.0, 0.5, 0.0]
    assert state.arrays["counts"].tolist() == [0.0, 3.0, 1.0]
    assert state.arrays["reward_sums"].tolist() == [0.0, 1.5, 0.0]
    assert slate(policy, state, [0, 1, 2], n=3) == [
        (0, math.inf, 1.0),
        (1, pytest.approx(0.5 + 0.5 * math.sqrt(math.log(4) / 3)), 1.0),
        (2, pytest.approx(0.0 + 0.5 * math.sqrt(math.log(4) / 1)), 1.0),
    ]


def test_discounted_thompson_forgets_toward_the_prior() -> None:
    policy = make_policy(DiscountedThompson(gamma=0.95, prior_alpha=2.0, prior_beta=3.0), n_arms=2)
    state = with_rewards(policy, {1: [1.0] * 20})
    alpha, beta = policy.posterior(state)  # type: ignore[attr-defined]
    # beta[1] is exact: arm 1's counts and reward sums (all rewards 1) see the same products.
    assert alpha[1] == pytest.approx(2.0 + (1 - 0.95**20) / 0.05) and beta[1] == 3.0
    for _ in range(300):
        policy.update(state, 0, 0.5)
    alpha, beta = policy.posterior(state)  # type: ignore[attr-defined]
    assert alpha[1] == pytest.approx(2.0, abs=1e-5) and beta[1] == 3.0  # back to the prior
    assert alpha[0] == pytest.approx(2.0 + 10.0, rel=1e-6) and beta[0] == pytest.approx(3.0 + 10.0, rel=1e-6)


@pytest.mark.parametrize("name", ["discounted_ucb", "discounted_thompson"])
def test_load_state_rejects_more_discounted_mass_than_possible(name: str) -> None:
    policy = make_policy(config_from_dict(name, {"gamma": 0.5}), n_arms=2)
    state = PolicyState({"counts": np.array([1.5, 1.0]), "reward_sums": np.array([1.0, 0.5])}, n_updates=100)
    with pytest.raises(ValueError, match=r"discounted counts sum to 2.5, more than 2.0"):
        policy.load_state(policy.dump_state(state))
    state.n_updates = 1  # one update leaves at most 1.0
    with pytest.raises(ValueError, match=r"discounted counts sum to 2.5, more than 1"):
        policy.load_state(policy.dump_state(state))


@pytest.mark.parametrize(
    ("arms", "rewards", "counts", "sums", "match"),
    [
        ([0, 3, 0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], r"window arms must be in \[0, 3\)"),
        (
            [0, 1, 2],
            [1.0, 0.0, 0.0],
            [1.0, 1.0, 0.0],
            [1.0, 0.0, 0.0],
            r"window arms must be in",
        ),  # unfilled slot
        ([0, 1, 0], [1.0, 1.5, 0.0], [1.0, 1.0, 0.0], [1.0, 1.5, 0.0], r"window rewards must be in \[0, 1\]"),
        (
            [0, 1, 0],
            [1.0, 0.5, 0.0],
            [1.0, 1.0, 0.0],
            [1.0, 0.25, 0.0],
            r"counts and reward sums do not match the window",
        ),
        (
            [0, 1, 0],
            [1.0, 0.5, 0.0],
            [2.0, 0.0, 0.0],
            [1.0, 0.5, 0.0],
            r"counts and reward sums do not match the window",
        ),
    ],
)
def test_sliding_window_rejects_states_no_updates_produce(
    arms: list[int], rewards: list[float], counts: list[float], sums: list[float], match: str
) -> None:
    policy = make_policy(SlidingWindowUCB(window=3), n_arms=3)
    arrays = {
        "counts": np.array(counts),
        "reward_sums": np.array(sums),
        "window_arms": np.array(arms, dtype=np.int64),
        "window_rewards": np.array(rewards),
    }
    state = PolicyState(arrays, n_updates=2)
    with pytest.raises(ValueError, match=f"corrupt sliding_window_ucb policy state: {match}"):
        policy.load_state(policy.dump_state(state))
