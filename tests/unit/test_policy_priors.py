"""merge and combine: the laws every policy with ``supports_prior`` must obey.

The service merges per-shard population (and segment) statistics with ``merge`` and decides for
a user with ``select(combine(user, combine(segment, population, s2), s1), ...)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rewardloop.learning.bandits import ALGORITHMS, EpsilonGreedy, LinUCB, Policy, PolicyState, Thompson, make_policy
from rewardloop.learning.bandits.ridge import RidgePolicy
from tests.unit.test_policy_conformance import CONTEXT_DIM, N_ARMS, Event, build, feedback, learn, trained

PRIOR_NAMES = [name for name in sorted(ALGORITHMS) if build(ALGORITHMS[name]()).supports_prior]
POPULATION_BEST, USER_BEST, SEGMENT_BEST = 6, 3, 2


@pytest.fixture(params=PRIOR_NAMES)
def policy(request: pytest.FixtureRequest) -> Policy:
    return build(ALGORITHMS[request.param]())


def preferring(best: int, seed: int, per_arm: int) -> list[Event]:
    """``per_arm`` events on every arm, Bernoulli rewards 0.9 on ``best`` and 0.2 elsewhere, any context."""
    rng = np.random.default_rng(seed)
    arms = rng.permutation(np.repeat(np.arange(N_ARMS), per_arm))
    return [
        Event(
            int(arm),
            float(rng.random() < (0.9 if arm == best else 0.2)),
            np.concatenate(([1.0], rng.normal(size=CONTEXT_DIM - 1))),
            0.5,
        )
        for arm in arms
    ]


def state_of(policy: Policy, log: list[Event]) -> PolicyState:
    state = policy.new_state()
    for event in log:
        learn(policy, state, event)
    return state


def share(policy: Policy, state: PolicyState, arm: int, decisions: int = 200) -> float:
    """How often ``arm`` comes first, over seeded decisions with random contexts."""
    hits = 0
    for seed in range(decisions):
        rng = np.random.default_rng(seed)
        x = np.concatenate(([1.0], rng.normal(size=CONTEXT_DIM - 1)))
        hits += policy.select(state, np.arange(N_ARMS), 1, rng, context=x)[0].arm == arm
    return hits / decisions


# --- merge -------------------------------------------------------------------------------------


def test_merge_of_one_state_is_that_state(policy: Policy) -> None:
    for state in (policy.new_state(), trained(policy, steps=3), trained(policy, seed=1, steps=300)):
        assert policy.merge([state]) == state


def test_merge_of_shards_is_the_state_of_all_their_events(policy: Policy) -> None:
    log = feedback(seed=7, steps=600)
    shards = [state_of(policy, log[i::3]) for i in range(3)]  # disjoint event sets
    merged, whole = policy.merge(shards), state_of(policy, log)
    assert merged.n_updates == whole.n_updates == 600
    assert merged.arrays.keys() == whole.arrays.keys()
    for name, array in whole.arrays.items():
        assert merged.arrays[name].dtype == array.dtype and merged.arrays[name].shape == array.shape
        if name == "counts":
            assert np.array_equal(merged.arrays[name], array)  # integers: exact
        else:
            np.testing.assert_allclose(merged.arrays[name], array, rtol=1e-12, atol=1e-12, err_msg=name)
    assert policy.load_state(policy.dump_state(merged)) == merged  # publishable between shards
    assert policy.merge([merged, policy.new_state()]) == merged


def test_merge_does_not_mutate_its_inputs(policy: Policy) -> None:
    shards = [trained(policy, seed=seed) for seed in range(3)]
    before = [policy.dump_state(state) for state in shards]
    merged = policy.merge(shards)
    merged.arrays["counts"][0] += 1.0
    assert [policy.dump_state(state) for state in shards] == before


def test_merge_rejects_nothing_and_foreign_states(policy: Policy) -> None:
    with pytest.raises(ValueError, match="merge needs at least one state"):
        policy.merge([])
    other = build(policy.config, n_arms=N_ARMS + 1)
    with pytest.raises(ValueError, match=f"{policy.name} policy state array 'counts' must be float64"):
        policy.merge([trained(policy), other.new_state()])


# --- combine: identities and inputs -------------------------------------------------------------


def test_combine_with_nothing_to_add_is_the_state(policy: Policy) -> None:
    prior = state_of(policy, preferring(POPULATION_BEST, seed=1, per_arm=20))
    for state in (policy.new_state(), trained(policy)):
        for combined in (policy.combine(state, prior, 0.0), policy.combine(state, policy.new_state(), 5.0)):
            assert combined == state
            assert combined is not state
            combined.arrays["counts"][0] += 1.0
            assert combined != state  # a copy


def test_combine_does_not_mutate_its_inputs(policy: Policy) -> None:
    state, prior = trained(policy, seed=1), state_of(policy, preferring(POPULATION_BEST, seed=1, per_arm=20))
    before = policy.dump_state(state), policy.dump_state(prior)
    for strength in (0.0, 1.0, 50.0):
        policy.combine(state, prior, strength)
    assert (policy.dump_state(state), policy.dump_state(prior)) == before


@pytest.mark.parametrize("strength", [-1.0, math.nan, math.inf, "1", True, None])
def test_combine_rejects_bad_strength(policy: Policy, strength: object) -> None:
    with pytest.raises(ValueError, match=r"strength must be a finite number >= 0, got"):
        policy.combine(policy.new_state(), policy.new_state(), strength)  # type: ignore[arg-type]


def test_combine_rejects_a_prior_of_another_shape(policy: Policy) -> None:
    other = build(policy.config, n_arms=N_ARMS + 1)
    with pytest.raises(ValueError, match="must be float64"):
        policy.combine(policy.new_state(), other.new_state(), 1.0)


# --- combine: what it does to decisions ------------------------------------------------------


def test_combine_pulls_a_new_user_toward_the_prior_best_arm(policy: Policy) -> None:
    population = state_of(policy, preferring(POPULATION_BEST, seed=2, per_arm=100))
    fresh = policy.new_state()
    alone = share(policy, fresh, POPULATION_BEST)
    pulled = share(policy, policy.combine(fresh, population, 20.0), POPULATION_BEST)
    # Measured: 0.94-1.0 with the prior (epsilon-greedy's 0.9 + 0.1 / 10), 0.0-0.13 without. With
    # strength 5 LinTS gets 0.83: for linear policies s I is worth about s / |x|^2 observations.
    assert pulled > 0.85 and alone < 0.3, (alone, pulled)


def test_the_users_own_evidence_outweighs_the_prior_as_it_grows(policy: Policy) -> None:
    population = state_of(policy, preferring(POPULATION_BEST, seed=3, per_arm=100))
    shares = []
    for per_arm in (1, 30):
        user = state_of(policy, preferring(USER_BEST, seed=4, per_arm=per_arm))
        effective = policy.combine(user, population, 10.0)
        shares.append((share(policy, effective, POPULATION_BEST), share(policy, effective, USER_BEST)))
    (prior_early, user_early), (prior_late, user_late) = shares
    # Measured: with 1 event per arm the prior's best arm leads (0.92-1.0, the user's 0.0-0.02);
    # with 30 per arm the user's own best arm wins (0.93-1.0, the prior's 0.0-0.06).
    assert prior_early > user_early, shares
    assert user_late > 0.85 and prior_late < 0.1, shares


def test_combine_accepts_a_combined_prior_for_segments(policy: Policy) -> None:
    population = state_of(policy, preferring(POPULATION_BEST, seed=5, per_arm=100))
    fresh = policy.new_state()
    for per_arm, winner in ((100, SEGMENT_BEST), (1, POPULATION_BEST)):
        segment = state_of(policy, preferring(SEGMENT_BEST, seed=6, per_arm=per_arm))
        segment_prior = policy.combine(segment, population, 20.0)
        effective = policy.combine(fresh, segment_prior, 20.0)
        # A well-observed segment overrides the population, a barely observed one does not.
        # Measured: 0.93-1.0 and 0.94-1.0.
        assert share(policy, effective, winner) > 0.85, (per_arm, winner)


# --- combine: golden values ------------------------------------------------------------------------


def test_count_based_combine_by_hand() -> None:
    policy = make_policy(EpsilonGreedy(), n_arms=3)
    prior = PolicyState({"counts": np.array([4.0, 0.0, 2.0]), "reward_sums": np.array([3.0, 0.0, 0.5])}, 6)
    state = PolicyState({"counts": np.array([1.0, 2.0, 0.0]), "reward_sums": np.array([1.0, 0.5, 0.0])}, 3)
    combined = policy.combine(state, prior, 2.0)
    # Arms 0 and 2: 2 pseudo-rewards at the prior means 0.75 and 0.25; arm 1: no prior data.
    assert combined.arrays["counts"].tolist() == [3.0, 2.0, 2.0]
    assert combined.arrays["reward_sums"].tolist() == [2.5, 0.5, 0.5]
    assert combined.n_updates == 3


def test_linear_combine_is_ridge_toward_the_prior_coefficients() -> None:
    policy = make_policy(LinUCB(ridge=2.0), n_arms=3, context_dim=2)
    prior = policy.new_state()
    rng = np.random.default_rng(8)
    for _ in range(50):
        x = np.array([1.0, rng.normal()])
        policy.update(prior, int(rng.integers(2)), float(rng.random() < 0.3 + 0.2 * x[1]), context=x)
    assert isinstance(policy, RidgePolicy)
    theta_prior = policy.coefficients(prior)
    combined = policy.combine(policy.new_state(), prior, 3.0)
    # A fresh user: A = (2 + 3) I and b = 3 theta_prior, so theta = 3 / 5 theta_prior on arms 0 and 1.
    assert policy.coefficients(combined)[:2] == pytest.approx(0.6 * theta_prior[:2], abs=1e-12)
    assert combined.arrays["gram"][0].tolist() == [[3.0, 0.0], [0.0, 3.0]]
    assert not combined.arrays["gram"][2].any() and not combined.arrays["xr"][2].any()  # no prior data
    assert combined.arrays["counts"].tolist() == [3.0, 3.0, 0.0]
    # As the user's own Gram matrix G grows the estimate moves from theta_prior to the user's fit.
    user = policy.new_state()
    distances = []
    for steps in (10, 100, 1000):
        while user.n_updates < steps:
            x = np.array([1.0, rng.normal()])
            policy.update(user, 0, float(rng.random() < 0.8), context=x)
        own = policy.coefficients(user)[0]
        effective = policy.coefficients(policy.combine(user, prior, 3.0))[0]
        distances.append(float(np.linalg.norm(effective - own)))
    assert distances[0] > distances[1] > distances[2] and distances[2] < 0.01, distances


def test_thompson_combine_replaces_the_uniform_base_where_the_prior_has_data() -> None:
    policy = make_policy(Thompson(), n_arms=3)
    prior = PolicyState({"counts": np.array([98.0, 0.0, 8.0]), "reward_sums": np.array([9.0, 0.0, 7.0])}, 106)
    user = PolicyState({"counts": np.array([2.0, 1.0, 0.0]), "reward_sums": np.array([1.0, 1.0, 0.0])}, 3)
    alpha, beta = policy.posterior(policy.combine(user, prior, 4.0))
    # Arm 0: the prior's mean (9 + 1) / (98 + 2) = 0.1 weighs 4 observations, plus the user's 1 of 2;
    # arm 1: no prior data, so Beta(1, 1) and the user's 1 of 1; arm 2: (7 + 1) / (8 + 2) = 0.8.
    assert alpha.tolist() == pytest.approx([0.4 + 1.0, 1.0 + 1.0, 3.2])
    assert beta.tolist() == pytest.approx([3.6 + 1.0, 1.0, 0.8])
    # A new user's prior mean is the population's (stacked on Beta(1, 1) it would be (1 + 0.4) / 6).
    alpha, beta = policy.posterior(policy.combine(policy.new_state(), prior, 4.0))
    assert alpha[0] / (alpha[0] + beta[0]) == pytest.approx(0.1)


PER_ARM_NAMES = [name for name in PRIOR_NAMES if build(ALGORITHMS[name]()).per_arm_strength]


@pytest.mark.parametrize("name", PER_ARM_NAMES)
def test_a_strength_per_arm_is_each_arm_combined_at_its_own_strength(name: str) -> None:
    policy = build(ALGORITHMS[name]())
    rng = np.random.default_rng(5)
    user, prior = policy.new_state(), policy.new_state()
    for _ in range(40):
        policy.update(prior, int(rng.integers(N_ARMS)), float(rng.random() < 0.3))
    for _ in range(6):
        policy.update(user, int(rng.integers(N_ARMS)), float(rng.random() < 0.6))
    strengths = np.linspace(0.5, 30.0, N_ARMS)
    per_arm = policy.combine(user, prior, strengths)
    for arm, strength in enumerate(strengths):
        alone = policy.combine(user, prior, float(strength))
        for key, values in per_arm.arrays.items():
            assert values[arm] == pytest.approx(alone.arrays[key][arm], rel=1e-12), (key, arm)
    with pytest.raises(ValueError, match="strength per arm"):
        policy.combine(user, prior, np.ones(N_ARMS + 1))
    with pytest.raises(ValueError, match="strength per arm"):
        policy.combine(user, prior, np.full(N_ARMS, -1.0))


def test_linear_policies_take_one_strength() -> None:
    assert "linucb" in PRIOR_NAMES and "linucb" not in PER_ARM_NAMES
    policy = build(LinUCB())
    with pytest.raises(ValueError, match="strength must be a finite number"):
        policy.combine(policy.new_state(), policy.new_state(), np.ones(N_ARMS))
