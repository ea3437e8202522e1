"""Checks every registered policy must pass (River's `checks/` habit).

Parametrized over ALGORITHMS: registering a new algorithm runs all of these on it.
"""

from __future__ import annotations

import dataclasses
import json
import random
import struct

import numpy as np
import pytest

from rewardloop.workers.policies import (
    ALGORITHMS,
    Choice,
    Policy,
    PolicyConfig,
    PolicyState,
    config_from_dict,
    make_policy,
)

N_ARMS = 10
NAMES = sorted(ALGORITHMS)


@pytest.fixture(params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def policy(name: str) -> Policy:
    return make_policy(ALGORITHMS[name](), n_arms=N_ARMS)


def feedback(seed: int, steps: int) -> list[tuple[int, float]]:
    """A seeded (arm, reward) log with fractional rewards; arm 9 is never played."""
    rng = np.random.default_rng(seed)
    return [
        (int(rng.integers(N_ARMS - 1)), float(rng.choice([0.0, 1.0, rng.random()]))) for _ in range(steps)
    ]


def trained(policy: Policy, seed: int = 0, steps: int = 200) -> PolicyState:
    state = policy.new_state()
    for arm, reward in feedback(seed, steps):
        policy.update(state, arm, reward)
    return state


def states(policy: Policy) -> list[PolicyState]:
    return [policy.new_state(), trained(policy, steps=3), trained(policy, seed=1, steps=300)]


# --- learned state -------------------------------------------------------------------------


def test_new_state_is_empty_float64(policy: Policy) -> None:
    state = policy.new_state()
    assert state.n_updates == 0
    assert state.arrays
    for array in state.arrays.values():
        assert array.dtype == np.float64
        assert not array.any()


def test_update_counts_updates_and_changes_state(policy: Policy) -> None:
    state = policy.new_state()
    policy.update(state, 3, 0.7)
    policy.update(state, np.int64(3), np.float64(0.2))  # type: ignore[arg-type]
    assert state.n_updates == 2
    assert state != policy.new_state()


def test_replay_is_bit_identical(policy: Policy) -> None:
    snapshot = trained(policy, seed=2)
    log = feedback(seed=3, steps=500)
    first, second = snapshot.copy(), snapshot.copy()
    for arm, reward in log:
        policy.update(first, arm, reward)
    for arm, reward in log:
        policy.update(second, arm, reward)
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
        policy.update(state, arm, reward)  # type: ignore[arg-type]
    assert state == before


# --- bytes -------------------------------------------------------------------------------


def test_state_round_trips_through_bytes_and_continues_identically(policy: Policy) -> None:
    for state in states(policy):
        blob = policy.dump_state(state)
        loaded = policy.load_state(blob)
        assert loaded == state
        assert policy.dump_state(loaded) == blob
        for arm, reward in feedback(seed=4, steps=50):
            policy.update(state, arm, reward)
            policy.update(loaded, arm, reward)
            original = policy.select(state, np.arange(N_ARMS), 3, np.random.default_rng(arm))
            restored = policy.select(loaded, np.arange(N_ARMS), 3, np.random.default_rng(arm))
            assert original == restored
        assert policy.dump_state(loaded) == policy.dump_state(state)


def test_equal_states_give_equal_bytes(policy: Policy) -> None:
    assert policy.dump_state(trained(policy, seed=5)) == policy.dump_state(trained(policy, seed=5))
    assert policy.dump_state(trained(policy, seed=5)) != policy.dump_state(trained(policy, seed=6))


def test_header_names_algorithm_and_size(policy: Policy) -> None:
    blob = policy.dump_state(trained(policy, steps=7))
    name = policy.config.name.encode()
    assert blob[:4] == b"RLPS"
    assert struct.unpack_from("<HB", blob, 4) == (1, len(name))
    assert blob[7 : 7 + len(name)] == name
    assert struct.unpack_from("<IQ", blob, 7 + len(name)) == (N_ARMS, 7)


def test_load_state_rejects_wrong_algorithm(name: str, policy: Policy) -> None:
    for other in set(ALGORITHMS) - {name}:
        foreign = make_policy(ALGORITHMS[other](), n_arms=N_ARMS)
        blob = foreign.dump_state(trained(foreign))
        with pytest.raises(
            ValueError, match=f"policy state is for algorithm '{other}', this policy is '{name}'"
        ):
            policy.load_state(blob)


def test_load_state_rejects_wrong_n_arms(policy: Policy) -> None:
    bigger = make_policy(policy.config, n_arms=N_ARMS + 1)
    with pytest.raises(ValueError, match="policy state has n_arms=10, this policy has n_arms=11"):
        bigger.load_state(policy.dump_state(trained(policy)))


def test_load_state_rejects_bad_magic_and_version(policy: Policy) -> None:
    blob = policy.dump_state(trained(policy))
    with pytest.raises(ValueError, match="not a policy state: magic b'XLPS'"):
        policy.load_state(b"X" + blob[1:])
    with pytest.raises(ValueError, match="unsupported policy state format version 2"):
        policy.load_state(blob[:4] + struct.pack("<H", 2) + blob[6:])


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


def test_load_state_rejects_non_finite_values(policy: Policy) -> None:
    for name in policy.new_state().arrays:
        state = trained(policy)
        state.arrays[name].flat[0] = np.nan
        with pytest.raises(ValueError, match="corrupt"):
            policy.load_state(policy.dump_state(state))


def test_dump_state_rejects_a_state_of_another_shape(policy: Policy) -> None:
    other = make_policy(policy.config, n_arms=N_ARMS + 1)
    with pytest.raises(ValueError, match="must be float64"):
        policy.dump_state(other.new_state())


# --- decisions -----------------------------------------------------------------------------


def test_choices_are_well_formed(policy: Policy) -> None:
    rng = np.random.default_rng(0)
    for state in states(policy):
        for available in (np.arange(N_ARMS), np.array([7, 2, 9, 4]), np.array([5]), [3, 1, 8]):
            for n in range(1, len(available) + 1):
                slate = policy.select(state, available, n, rng)
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
        rule = policy._slate_rule(state, available, rng)
        for remaining in (np.arange(6), np.array([0, 2, 5]), np.array([4])):
            scores, probabilities = rule(remaining)
            assert scores.shape == probabilities.shape == remaining.shape
            assert np.all(probabilities >= 0.0)
            assert probabilities.sum() == pytest.approx(1.0, abs=1e-12)


def test_same_seed_same_choices(policy: Policy) -> None:
    for state in states(policy):
        for seed in range(5):
            first = policy.select(state, np.arange(N_ARMS), 4, np.random.default_rng(seed))
            second = policy.select(state, np.arange(N_ARMS), 4, np.random.default_rng(seed))
            assert first == second


def test_select_mutates_neither_state_nor_available(policy: Policy) -> None:
    state = trained(policy)
    before = policy.dump_state(state)
    available = np.array([8, 1, 5, 3, 0])
    available.flags.writeable = False  # any write raises
    for seed in range(5):
        policy.select(state, available, 5, np.random.default_rng(seed))
    assert available.tolist() == [8, 1, 5, 3, 0]
    assert policy.dump_state(state) == before


def test_library_uses_only_the_passed_rng(policy: Policy) -> None:
    np.random.seed(0)
    random.seed(0)
    numpy_before, python_before = np.random.get_state(), random.getstate()
    state = trained(policy)
    policy.select(state, np.arange(N_ARMS), 5, np.random.default_rng(0))
    policy.dump_state(state)
    after = np.random.get_state()
    assert all(np.array_equal(a, b) for a, b in zip(numpy_before, after, strict=True))
    assert random.getstate() == python_before


@pytest.mark.parametrize("n", [0, -1, 5, 1.0, True, None])
def test_n_must_be_between_one_and_available(policy: Policy, n: object) -> None:
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 4\]"):
        policy.select(policy.new_state(), np.arange(4), n, np.random.default_rng(0))  # type: ignore[arg-type]


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
        policy.select(policy.new_state(), available, 1, np.random.default_rng(0))


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
    policy = make_policy(config, n_arms=3)
    assert isinstance(policy, Policy)
    assert policy.config is config and policy.n_arms == 3 and policy.name == name


@pytest.mark.parametrize("n_arms", [0, -1, 2**32, 1.5, True, "3"])
def test_make_policy_validates_n_arms(name: str, n_arms: object) -> None:
    with pytest.raises(ValueError, match=r"n_arms must be an integer in \[1, 2\*\*32\)"):
        make_policy(ALGORITHMS[name](), n_arms)  # type: ignore[arg-type]
