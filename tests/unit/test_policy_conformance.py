"""Checks every registered policy must pass (River's `checks/` habit).

Parametrized over ALGORITHMS: registering a new algorithm runs all of these on it. Every
policy is built with ``context_dim=5`` and arm features and fed random contexts and
propensities, which the context-free ones (and all but EXP3) ignore.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import struct
from typing import Any, NamedTuple

import numpy as np
import pytest

from rewardloop.learning.bandits import (
    ALGORITHMS,
    Choice,
    Policy,
    PolicyConfig,
    PolicyState,
    config_from_dict,
    make_policy,
)

N_ARMS = 10
CONTEXT_DIM = 5
NAMES = sorted(ALGORITHMS)


def build(config: PolicyConfig, n_arms: int = N_ARMS) -> Policy:
    """``config``'s policy with everything any algorithm needs: a context size and arm features.

    The features are a constant and two small ones, as item features should be for hybrid
    LinUCB (see hybrid_linucb.py).
    """
    small = 0.3 * np.random.default_rng(n_arms).normal(size=(n_arms, 2))
    features = np.column_stack((np.ones(n_arms), small))
    return make_policy(config, n_arms, context_dim=CONTEXT_DIM, arm_features=features)


CONTEXTUAL = [name for name in NAMES if build(ALGORITHMS[name]()).contextual]
CONTEXT_FREE = [name for name in NAMES if name not in CONTEXTUAL]
NEEDS_PROPENSITY = [name for name in NAMES if build(ALGORITHMS[name]()).needs_propensity]
# The others obey merge and combine laws: test_policy_priors.py.
NO_PRIOR = [name for name in NAMES if not build(ALGORITHMS[name]()).supports_prior]


@pytest.fixture(params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def policy(name: str) -> Policy:
    return build(ALGORITHMS[name]())


class Event(NamedTuple):
    arm: int
    reward: float
    context: np.ndarray
    propensity: float


def context(seed: int) -> np.ndarray:
    """A context vector: a bias term, then standard normal features."""
    return np.concatenate(([1.0], np.random.default_rng(seed).normal(size=CONTEXT_DIM - 1)))


def feedback(seed: int, steps: int) -> list[Event]:
    """A seeded log with fractional rewards, contexts and propensities; arm 9 is never played."""
    rng = np.random.default_rng(seed)
    return [
        Event(
            int(rng.integers(N_ARMS - 1)),
            float(rng.choice([0.0, 1.0, rng.random()])),
            np.concatenate(([1.0], rng.normal(size=CONTEXT_DIM - 1))),
            float(rng.uniform(0.05, 1.0)),
        )
        for _ in range(steps)
    ]


def learn(policy: Policy, state: PolicyState, event: Event) -> None:
    policy.update(state, event.arm, event.reward, context=event.context, propensity=event.propensity)


def trained(policy: Policy, seed: int = 0, steps: int = 200) -> PolicyState:
    state = policy.new_state()
    for event in feedback(seed, steps):
        learn(policy, state, event)
    return state


def states(policy: Policy) -> list[PolicyState]:
    return [policy.new_state(), trained(policy, steps=3), trained(policy, seed=1, steps=300)]


# --- learned state -------------------------------------------------------------------------


def test_new_state_is_empty(policy: Policy) -> None:
    state = policy.new_state()
    assert state.n_updates == 0
    assert state.arrays
    for array in state.arrays.values():
        assert array.dtype in (np.float64, np.int64)  # int64: sliding-window UCB's ring of arms
        assert not array.any()


def test_capabilities_are_class_level_flags(policy: Policy) -> None:
    for flag in ("contextual", "supports_prior", "needs_propensity"):
        assert type(getattr(type(policy), flag)) is bool, flag
    assert policy.context_dim == (CONTEXT_DIM if policy.contextual else 0)


def test_update_counts_updates_and_changes_state(policy: Policy) -> None:
    state = policy.new_state()
    x = context(0)
    policy.update(state, 3, 0.7, context=x, propensity=0.5)
    arm, reward, propensity = np.int64(3), np.float64(0.2), np.float64(0.5)
    policy.update(state, arm, reward, context=x.tolist(), propensity=propensity)  # type: ignore[arg-type]
    assert state.n_updates == 2
    assert state != policy.new_state()


def test_replay_is_bit_identical(policy: Policy) -> None:
    snapshot = trained(policy, seed=2)
    log = feedback(seed=3, steps=500)
    first, second = snapshot.copy(), snapshot.copy()
    for event in log:
        learn(policy, first, event)
    for event in log:
        learn(policy, second, event)
    assert first == second
    assert policy.dump_state(first) == policy.dump_state(second)
    assert snapshot == trained(policy, seed=2), "copy() must not share arrays"


@pytest.mark.parametrize(
    ("arm", "reward", "error", "match"),
    [
        (-1, 0.5, ValueError, r"arm must be in \[0, 10\), got -1"),
        (N_ARMS, 0.5, ValueError, r"arm must be in \[0, 10\), got 10"),
        (1.5, 0.5, TypeError, "cannot be interpreted as an integer"),
        (0, -0.1, ValueError, r"reward must be in \[0, 1\], got -0.1"),
        (0, 1.5, ValueError, r"reward must be in \[0, 1\], got 1.5"),
        (0, float("nan"), ValueError, r"reward must be in \[0, 1\], got nan"),
    ],
)
def test_update_rejects_bad_input_without_changing_state(
    policy: Policy, arm: object, reward: object, error: type[Exception], match: str
) -> None:
    state = trained(policy)
    before = state.copy()
    with pytest.raises(error, match=match):
        policy.update(state, arm, reward, context=context(0), propensity=0.5)  # type: ignore[arg-type]
    assert state == before


@pytest.mark.parametrize("age", [0, 1, 7, 40])
def test_revise_gives_the_state_that_learned_the_new_reward_in_its_place(policy: Policy, age: int) -> None:
    log = feedback(seed=4, steps=60)
    target = len(log) - 1 - age
    original = log[target]
    new_reward = 1.0 - original.reward if original.reward != 0.5 else 0.9
    revised = policy.new_state()
    for event in log:
        learn(policy, revised, event)
    policy.revise(
        revised, original.arm, original.reward, new_reward, context=original.context,
        propensity=original.propensity, age=age,
    )  # fmt: skip
    expected = policy.new_state()
    for i, event in enumerate(log):
        learn(policy, expected, event._replace(reward=new_reward) if i == target else event)
    window = getattr(policy.config, "window", math.inf)
    assert revised.n_updates == expected.n_updates == len(log)
    if age < window:
        for key, array in expected.arrays.items():
            np.testing.assert_allclose(revised.arrays[key], array, rtol=1e-9, atol=1e-12, err_msg=key)
        assert revised != trained_on(policy, log), "the revision must change the state"
    else:  # the sliding window has forgotten the observation already
        assert revised == expected == trained_on(policy, log)


def trained_on(policy: Policy, log: list[Event]) -> PolicyState:
    state = policy.new_state()
    for event in log:
        learn(policy, state, event)
    return state


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arm": N_ARMS}, r"arm must be in \[0, 10\), got 10"),
        ({"old_reward": -0.5}, r"old_reward must be in \[0, 1\], got -0.5"),
        ({"new_reward": 2.0}, r"new_reward must be in \[0, 1\], got 2.0"),
        ({"age": 200}, r"age must be in \[0, 200\) \(updates learned\), got 200"),
        ({"age": -1}, r"age must be in \[0, 200\)"),
    ],
)
def test_revise_rejects_bad_input_without_changing_state(policy: Policy, kwargs: dict[str, Any], match: str) -> None:
    state = trained(policy)
    before = state.copy()
    call = {"arm": 0, "old_reward": 0.0, "new_reward": 1.0, "age": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        policy.revise(state, context=context(0), propensity=0.5, **call)
    assert state == before


# --- bytes -------------------------------------------------------------------------------


def test_state_round_trips_through_bytes_and_continues_identically(policy: Policy) -> None:
    for state in states(policy):
        blob = policy.dump_state(state)
        loaded = policy.load_state(blob)
        assert loaded == state
        assert policy.dump_state(loaded) == blob
        for event in feedback(seed=4, steps=50):
            learn(policy, state, event)
            learn(policy, loaded, event)
            x, arms = context(event.arm), np.arange(N_ARMS)
            original = policy.select(state, arms, 3, np.random.default_rng(event.arm), context=x)
            restored = policy.select(loaded, arms, 3, np.random.default_rng(event.arm), context=x)
            assert original == restored
        assert policy.dump_state(loaded) == policy.dump_state(state)


def test_equal_states_give_equal_bytes(policy: Policy) -> None:
    assert policy.dump_state(trained(policy, seed=5)) == policy.dump_state(trained(policy, seed=5))
    assert policy.dump_state(trained(policy, seed=5)) != policy.dump_state(trained(policy, seed=6))


def test_header_names_algorithm_and_size(policy: Policy) -> None:
    blob = policy.dump_state(trained(policy, steps=7))
    name = policy.config.name.encode()
    assert blob[:4] == b"RLPS"
    assert struct.unpack_from("<HB", blob, 4) == (2, len(name))
    assert blob[7 : 7 + len(name)] == name
    assert struct.unpack_from("<IQI", blob, 7 + len(name)) == (N_ARMS, 7, policy.arm_rows.signature)


def test_load_state_rejects_wrong_algorithm(name: str, policy: Policy) -> None:
    for other in set(ALGORITHMS) - {name}:
        foreign = build(ALGORITHMS[other]())
        blob = foreign.dump_state(trained(foreign))
        message = f"policy state is for algorithm '{other}', this policy is '{name}'"
        with pytest.raises(ValueError, match=message):
            policy.load_state(blob)


def test_load_state_rejects_wrong_n_arms(policy: Policy) -> None:
    bigger = build(policy.config, n_arms=N_ARMS + 1)
    with pytest.raises(ValueError, match="policy state has n_arms=10, this policy has n_arms=11"):
        bigger.load_state(policy.dump_state(trained(policy)))


def test_load_state_rejects_bad_magic_and_version(policy: Policy) -> None:
    blob = policy.dump_state(trained(policy))
    with pytest.raises(ValueError, match="not a policy state: magic b'XLPS'"):
        policy.load_state(b"X" + blob[1:])
    with pytest.raises(ValueError, match="unsupported policy state format version 3"):
        policy.load_state(blob[:4] + struct.pack("<H", 3) + blob[6:])


def test_load_state_rejects_every_truncation_and_extension(policy: Policy) -> None:
    blob = policy.dump_state(trained(policy))
    for end in range(len(blob)):
        with pytest.raises(ValueError, match="policy state"):
            policy.load_state(blob[:end])
    with pytest.raises(ValueError, match="checksum mismatch"):
        policy.load_state(blob + b"\0")


def test_load_state_rejects_every_flipped_byte(policy: Policy) -> None:
    blob = bytearray(policy.dump_state(trained(policy)))
    for position in range(len(blob)):
        damaged = blob.copy()
        damaged[position] ^= 0x10
        with pytest.raises(ValueError, match="policy state"):
            policy.load_state(bytes(damaged))


def test_load_state_rejects_impossible_values(policy: Policy) -> None:
    for name, array in policy.new_state().arrays.items():
        for bad in (np.nan, np.inf) if array.dtype.kind == "f" else (-1, N_ARMS):
            state = trained(policy)
            state.arrays[name].flat[0] = bad
            with pytest.raises(ValueError, match="corrupt"):
                policy.load_state(policy.dump_state(state))


def test_dump_state_rejects_a_state_of_another_shape(policy: Policy) -> None:
    other = build(policy.config, n_arms=N_ARMS + 1)
    with pytest.raises(ValueError, match="must be float64"):
        policy.dump_state(other.new_state())


# --- decisions -----------------------------------------------------------------------------


def test_choices_are_well_formed(policy: Policy) -> None:
    rng = np.random.default_rng(0)
    for state in states(policy):
        for available in (np.arange(N_ARMS), np.array([7, 2, 9, 4]), np.array([5]), [3, 1, 8]):
            for n in range(1, len(available) + 1):
                slate = policy.select(state, available, n, rng, context=context(n))
                assert [c.slot for c in slate] == list(range(n))
                assert len({c.arm for c in slate}) == n
                assert {c.arm for c in slate} <= set(np.asarray(available).tolist())
                for choice in slate:
                    assert isinstance(choice, Choice)
                    assert type(choice.arm) is int and type(choice.slot) is int
                    assert type(choice.score) is float and not np.isnan(choice.score)
                    assert type(choice.propensity) is float and 0.0 < choice.propensity <= 1.0


def test_slot_probabilities_sum_to_one(policy: Policy) -> None:
    rng = np.random.default_rng(1)
    available = np.array([0, 3, 9, 4, 6, 1], dtype=np.intp)
    for state in states(policy):
        rule = policy._slate_rule(state, available, rng, context(2) if policy.contextual else np.empty(0))
        for remaining in (np.arange(6), np.array([0, 2, 5]), np.array([4])):
            scores, probabilities = rule(remaining)
            assert scores.shape == probabilities.shape == remaining.shape
            assert np.all(probabilities >= 0.0)
            assert probabilities.sum() == pytest.approx(1.0, abs=1e-12)


def test_same_seed_same_choices(policy: Policy) -> None:
    for state in states(policy):
        for seed in range(5):
            x = context(seed)
            first = policy.select(state, np.arange(N_ARMS), 4, np.random.default_rng(seed), context=x)
            second = policy.select(state, np.arange(N_ARMS), 4, np.random.default_rng(seed), context=x)
            assert first == second


def read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False  # any write raises
    return array


def test_select_mutates_neither_state_nor_available_nor_context(policy: Policy) -> None:
    state = trained(policy)
    before = policy.dump_state(state)
    available = read_only(np.array([8, 1, 5, 3, 0]))
    x = read_only(context(0))
    for seed in range(5):
        policy.select(state, available, 5, np.random.default_rng(seed), context=x)
    assert available.tolist() == [8, 1, 5, 3, 0]
    assert x.tolist() == context(0).tolist()
    assert policy.dump_state(state) == before


def test_update_does_not_mutate_the_context(policy: Policy) -> None:
    state = trained(policy)
    x = read_only(context(1))
    policy.update(state, 2, 0.5, context=x, propensity=0.25)
    assert x.tolist() == context(1).tolist()


def test_library_uses_only_the_passed_rng(policy: Policy) -> None:
    np.random.seed(0)
    random.seed(0)
    numpy_before, python_before = np.random.get_state(), random.getstate()
    state = trained(policy)
    policy.select(state, np.arange(N_ARMS), 5, np.random.default_rng(0), context=context(0))
    policy.dump_state(state)
    after = np.random.get_state()
    assert all(np.array_equal(a, b) for a, b in zip(numpy_before, after, strict=True))
    assert random.getstate() == python_before


@pytest.mark.parametrize("n", [0, -1, 5, 1.0, True, None])
def test_n_must_be_between_one_and_available(policy: Policy, n: object) -> None:
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 4\]"):
        rng = np.random.default_rng(0)
        policy.select(policy.new_state(), np.arange(4), n, rng, context=context(0))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("available", "match"),
    [
        (np.array([], dtype=int), "non-empty 1-D array of integer"),
        (np.array([[0, 1]]), "non-empty 1-D array of integer"),
        (np.array([0.0, 1.0]), "non-empty 1-D array of integer"),
        (np.array([0, N_ARMS]), r"available arms must be in \[0, 10\)"),
        (np.array([-1, 2]), r"available arms must be in \[0, 10\)"),
        (np.array([2, 4, 2]), "available arms must be distinct"),
    ],
)
def test_available_must_be_distinct_valid_arms(policy: Policy, available: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        policy.select(policy.new_state(), available, 1, np.random.default_rng(0), context=context(0))


# --- contexts and propensities -------------------------------------------------------------

BAD_CONTEXTS: list[tuple[Any, str]] = [
    (None, r"context is required by \w+: a vector of 5 floats"),
    (np.ones(4), r"context must have shape \(5,\), got \(4,\)"),
    (np.ones((5, 1)), r"context must have shape \(5,\), got \(5, 1\)"),
    (np.float64(1.0), r"context must have shape \(5,\), got \(\)"),
    (np.array([1.0, 0.0, np.nan, 0.0, 0.0]), r"context must be finite"),
    (np.array([1.0, 0.0, 0.0, -np.inf, 0.0]), r"context must be finite"),
    (["1", "x", "0", "0", "0"], r"context must be a vector of 5 floats"),
]


@pytest.mark.parametrize("name", CONTEXTUAL)
@pytest.mark.parametrize(("bad", "match"), BAD_CONTEXTS)
def test_contextual_policies_reject_bad_contexts(name: str, bad: Any, match: str) -> None:
    policy = build(ALGORITHMS[name]())
    state = trained(policy)
    before = state.copy()
    with pytest.raises(ValueError, match=match):
        policy.update(state, 1, 0.5, context=bad)
    assert state == before
    with pytest.raises(ValueError, match=match):
        policy.select(state, np.arange(N_ARMS), 2, np.random.default_rng(0), context=bad)


@pytest.mark.parametrize("name", CONTEXTUAL)
@pytest.mark.parametrize("context_dim", [0, None])
def test_contextual_policies_need_a_context_dim(name: str, context_dim: int | None) -> None:
    features = np.ones((N_ARMS, 2))
    with pytest.raises(ValueError, match=f"{name} is contextual: context_dim must be >= 1, got 0"):
        if context_dim is None:
            make_policy(ALGORITHMS[name](), N_ARMS, arm_features=features)
        else:
            make_policy(ALGORITHMS[name](), N_ARMS, context_dim=context_dim, arm_features=features)


@pytest.mark.parametrize("context_dim", [-1, 1.5, True, "3"])
def test_make_policy_validates_context_dim(name: str, context_dim: object) -> None:
    with pytest.raises(ValueError, match="context_dim must be a non-negative integer"):
        make_policy(ALGORITHMS[name](), N_ARMS, context_dim, np.ones((N_ARMS, 2)))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", CONTEXT_FREE)
def test_context_free_policies_ignore_context_and_its_size(name: str) -> None:
    plain, with_context = make_policy(ALGORITHMS[name](), N_ARMS), build(ALGORITHMS[name]())
    assert plain.context_dim == with_context.context_dim == 0
    first, second = plain.new_state(), with_context.new_state()
    for event in feedback(seed=5, steps=100):
        plain.update(first, event.arm, event.reward, propensity=event.propensity)
        junk = np.array([np.nan])
        with_context.update(second, event.arm, event.reward, context=junk, propensity=event.propensity)
    assert first == second
    for seed in range(5):
        without = plain.select(first, np.arange(N_ARMS), 3, np.random.default_rng(seed))
        ignored = with_context.select(second, np.arange(N_ARMS), 3, np.random.default_rng(seed), context="x")
        assert without == ignored


@pytest.mark.parametrize("name", NEEDS_PROPENSITY)
@pytest.mark.parametrize(
    ("propensity", "match"),
    [
        (None, r"propensity is required by \w+"),
        (0.0, r"propensity must be in \(0, 1\], got 0.0"),
        (1.5, r"propensity must be in \(0, 1\], got 1.5"),
        (math.nan, r"propensity must be in \(0, 1\], got nan"),
    ],
)
def test_propensity_is_required_and_checked(name: str, propensity: float | None, match: str) -> None:
    policy = build(ALGORITHMS[name]())
    state = trained(policy)
    before = state.copy()
    with pytest.raises(ValueError, match=match):
        policy.update(state, 1, 0.5, context=context(0), propensity=propensity)
    assert state == before


@pytest.mark.parametrize("name", [name for name in NAMES if name not in NEEDS_PROPENSITY])
def test_propensity_is_ignored_unless_needed(name: str) -> None:
    policy = build(ALGORITHMS[name]())
    first, second = policy.new_state(), policy.new_state()
    for event in feedback(seed=6, steps=50):
        policy.update(first, event.arm, event.reward, context=event.context)
        learn(policy, second, event)
    assert first == second


# --- priors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NO_PRIOR)
def test_merge_and_combine_are_refused_without_prior_support(name: str) -> None:
    policy = build(ALGORITHMS[name]())
    state = trained(policy)
    with pytest.raises(ValueError, match=f"{policy.name} does not support merge"):
        policy.merge([state, state])
    with pytest.raises(ValueError, match=f"{policy.name} does not support combine"):
        policy.combine(state, state, 1.0)


@pytest.mark.parametrize("name", NO_PRIOR)
def test_weighted_updates_and_scale_are_refused_without_additive_state(name: str) -> None:
    policy = build(ALGORITHMS[name]())
    state = trained(policy, steps=5)
    before = state.copy()
    event = feedback(seed=9, steps=1)[0]
    with pytest.raises(ValueError, match=f"{policy.name} does not take weighted updates"):
        policy.update(state, event.arm, event.reward, context=event.context, propensity=event.propensity, weight=2.0)
    with pytest.raises(ValueError, match=f"{policy.name} does not support scale"):
        policy.scale(state, 0.5)
    assert state == before


ADDITIVE = [name for name in NAMES if name not in NO_PRIOR]


@pytest.mark.parametrize("name", ADDITIVE)
def test_weighted_update_is_the_scaled_sum_of_unit_updates(name: str) -> None:
    """Decay's contract (rewards/decay.py): an update of weight w adds w times a unit update's
    statistics, revising it moves them by w times the reward change, and ``scale`` multiplies
    every update's weight, so a state read at factor 1/w(now) is the exponentially decayed one."""
    policy = build(ALGORITHMS[name]())
    log = feedback(seed=5, steps=40)
    weights = [2.0 ** (i / 8) for i in range(len(log))]  # 5 half-lives over the log
    weighted, expected = policy.new_state(), policy.new_state()
    for event, w in zip(log, weights, strict=True):
        policy.update(weighted, event.arm, event.reward, context=event.context, propensity=event.propensity, weight=w)
        unit = trained_on(policy, [event])
        for key, array in unit.arrays.items():
            expected.arrays[key] += w * array
    assert weighted.n_updates == len(log)
    for key, array in expected.arrays.items():
        np.testing.assert_allclose(weighted.arrays[key], array, rtol=1e-12, atol=1e-12, err_msg=key)
    target = log[10]
    policy.revise(weighted, target.arm, target.reward, 1.0 - target.reward, context=target.context,
                  propensity=target.propensity, age=len(log) - 11, weight=weights[10])  # fmt: skip
    replaced = policy.new_state()
    for i, (event, w) in enumerate(zip(log, weights, strict=True)):
        reward = 1.0 - event.reward if i == 10 else event.reward
        policy.update(replaced, event.arm, reward, context=event.context, propensity=event.propensity, weight=w)
    for key, array in replaced.arrays.items():
        np.testing.assert_allclose(weighted.arrays[key], array, rtol=1e-9, atol=1e-12, err_msg=key)
    half = policy.scale(weighted, 0.5)
    assert half.n_updates == weighted.n_updates
    for key, array in weighted.arrays.items():
        np.testing.assert_array_equal(half.arrays[key], array * 0.5)  # exact: a power of two
    assert policy.load_state(policy.dump_state(half)) == half


@pytest.mark.parametrize(
    ("weight", "match"), [(-1.0, "weight must be"), (-1e-300, "weight must"), (math.inf, "weight")]
)
def test_weight_must_be_finite_and_not_negative(weight: float, match: str) -> None:
    policy = build(ALGORITHMS["ucb1"]())
    state = policy.new_state()
    with pytest.raises(ValueError, match=match):
        policy.update(state, 0, 1.0, weight=weight)
    assert state == policy.new_state()


@pytest.mark.parametrize("name", ADDITIVE)
def test_an_observation_whose_weight_underflowed_counts_nothing(name: str) -> None:
    policy = build(ALGORITHMS[name]())
    state = trained(policy, steps=5)
    before = state.copy()
    event = feedback(seed=3, steps=1)[0]
    policy.update(state, event.arm, event.reward, context=event.context, propensity=event.propensity, weight=0.0)
    policy.revise(state, event.arm, event.reward, 1.0 - event.reward, context=event.context, weight=0.0)
    assert state.n_updates == before.n_updates + 1
    assert all(np.array_equal(state.arrays[k], a) for k, a in before.arrays.items())
    assert policy.load_state(policy.dump_state(state)) == state


@pytest.mark.parametrize("name", ["thompson", "ucb1", "epsilon_greedy"])
def test_corrections_that_round_past_zero_still_load(name: str) -> None:
    """0.1 then revised to 0.9 then to 0, weight 1.3: the sum misses 0 by a rounding error."""
    policy = build(ALGORITHMS[name]())
    state = policy.new_state()
    policy.update(state, 0, 0.1, weight=1.3)
    policy.revise(state, 0, 0.1, 0.9, weight=1.3)
    policy.revise(state, 0, 0.9, 0.0, weight=1.3)
    assert state.arrays["reward_sums"][0] < 0.0  # the rounding this test is about
    assert policy.load_state(policy.dump_state(state)) == state


# --- configs -----------------------------------------------------------------------------


def test_config_is_frozen_hashable_and_named(name: str) -> None:
    config_type = ALGORITHMS[name]
    config = config_type()
    assert config_type.name == config.name == name
    assert issubclass(config_type, PolicyConfig)
    assert config == config_type() and hash(config) == hash(config_type())
    field = dataclasses.fields(config)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, field, getattr(config, field))


def test_config_defaults_are_immutable_values(name: str) -> None:
    for field in dataclasses.fields(ALGORITHMS[name]):
        assert field.default_factory is dataclasses.MISSING, field.name
        assert isinstance(field.default, int | float | str | bool | tuple | frozenset), field.name


def test_config_round_trips_through_json(name: str) -> None:
    config = ALGORITHMS[name]()
    params = json.loads(json.dumps(config.to_dict()))
    assert params == config.to_dict()
    assert config_from_dict(name, params) == config


def test_make_policy_uses_the_registry(name: str) -> None:
    config = ALGORITHMS[name]()
    policy = build(config, n_arms=3)
    assert isinstance(policy, Policy)
    assert policy.config is config and policy.n_arms == 3 and policy.name == name
    assert repr(policy).startswith(f"{type(policy).__name__}({config!r}, n_arms=3")


@pytest.mark.parametrize("n_arms", [0, -1, 2**32, 1.5, True, "3"])
def test_make_policy_validates_n_arms(name: str, n_arms: object) -> None:
    with pytest.raises(ValueError, match=r"n_arms must be an integer in \[1, 2\*\*32\)"):
        make_policy(ALGORITHMS[name](), n_arms, CONTEXT_DIM, np.ones((3, 2)))  # type: ignore[arg-type]


def test_exploit_plays_the_best_scores_in_order_with_their_tie_share(policy: Policy) -> None:
    state = trained(policy, seed=2, steps=300)
    x = context(5)
    rng = np.random.default_rng(0)
    slate = policy.select(state, np.arange(N_ARMS), N_ARMS, rng, context=x, exploit=True)
    scores = [c.score for c in slate]
    assert scores == sorted(scores, reverse=True)
    assert {c.arm for c in slate} == set(range(N_ARMS))
    for choice in slate:
        ties = sum(1 for c in slate[choice.slot :] if c.score == choice.score)
        assert choice.propensity == pytest.approx(1.0 / ties)
    # The same arms however the exploring draw would have gone (ties aside).
    again = policy.select(state, np.arange(N_ARMS), 1, np.random.default_rng(1), context=x, exploit=True)
    assert again[0].score == slate[0].score
