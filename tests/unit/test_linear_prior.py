"""The linear policies' learned prior strength: the estimator, and how a shard's sample stores the states."""

from __future__ import annotations

import numpy as np
import pytest

from rewardloop.learning.segments.linear_prior import MAX_STRENGTH, linear_strength
from rewardloop.state.segment_priors import (
    LINEAR_SAMPLE_BYTES,
    MIN_LINEAR_SAMPLE,
    SAMPLE_ARMS,
    decode_linear,
    encode_linear,
    linear_sample_users,
)


def _users(tau: float, seed: int, users: int = 300, arms: int = 3, d: int = 4, sigma: float = 0.5):
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 0.5, (arms, d))
    grams, xrs = np.zeros((users, arms, d, d)), np.zeros((users, arms, d))
    for u in range(users):
        for a in range(arms):
            x = rng.normal(size=(int(rng.integers(1, 12)), d))
            y = x @ (theta[a] + rng.normal(0.0, tau, d)) + rng.normal(0.0, sigma, len(x))
            grams[u, a], xrs[u, a] = x.T @ x, x.T @ y
    return grams, xrs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_strength_is_the_noise_over_the_users_spread(seed: int) -> None:
    estimates = [linear_strength(*_users(tau, seed)) for tau in (0.5, 0.2, 0.05)]
    truths = [0.25 / tau**2 for tau in (0.5, 0.2, 0.05)]  # 1, 6.25, 100
    assert all(e is not None for e in estimates)
    assert estimates[0] < estimates[1] < estimates[2]
    # Within a factor of two of the truth (the method of moments on 300 users).
    for estimate, truth in zip(estimates[:2], truths[:2], strict=True):
        assert truth / 2 <= max(estimate, 1.0) <= 2 * truth + 1.0, (estimate, truth)


def test_users_who_agree_get_a_far_stronger_prior_the_strongest_when_they_look_alike() -> None:
    # Identical coefficients: the spread estimate is noise around 0, so either large or, when
    # negative, the cap (seeds 3-10 give 112-401 and the cap four times).
    estimates = [linear_strength(*_users(0.0, seed)) for seed in range(3, 11)]
    assert all(e is not None and e >= 100 for e in estimates)
    assert estimates.count(MAX_STRENGTH) >= 2


def test_no_estimate_without_enough_directions() -> None:
    grams, xrs = _users(0.2, 4, users=2, arms=1)
    assert linear_strength(grams[:, :, :, :] * 0.0, xrs * 0.0) is None  # nobody played
    one = np.zeros((1, 1, 4, 4))
    one[0, 0] = np.outer([1.0, 0, 0, 0], [1.0, 0, 0, 0])
    assert linear_strength(one, np.zeros((1, 1, 4))) is None


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="grams"):
        linear_strength(np.zeros((3, 2, 4, 4)), np.zeros((3, 2, 5)))


def test_a_sampled_state_decodes_exactly_rank_deficient_gram_matrices_included() -> None:
    rng = np.random.default_rng(5)
    arms, d = 7, 5
    counts, gram, xr = np.zeros(arms), np.zeros((arms, d, d)), np.zeros((arms, d))
    for arm in (1, 3, 4):
        for _ in range(arm):  # 1 and 3 plays: rank 1 and 3 of 5
            x = rng.normal(size=d)
            counts[arm] += 1
            gram[arm] += np.outer(x, x)
            xr[arm] += float(rng.random() < 0.3) * x
    updated_ms, played, grams, xrs = decode_linear(encode_linear(counts, gram, xr, 1234), arms, d)
    assert updated_ms == 1234 and played.tolist() == [1, 3, 4]
    assert np.array_equal(grams, gram[played]) and np.array_equal(xrs, xr[played])
    assert np.linalg.matrix_rank(grams[0]) == 1
    with pytest.raises(ValueError, match="dimension"):
        decode_linear(encode_linear(counts, gram, xr, 0), arms, d + 1)
    with pytest.raises(ValueError, match="truncated"):
        decode_linear(b"\x00" * 5, arms, d)
    with pytest.raises(ValueError, match="out of range"):
        decode_linear(encode_linear(counts, gram, xr, 0), 4, d)


def test_a_sample_keeps_the_most_played_arms_and_is_bounded_in_bytes() -> None:
    arms, d = SAMPLE_ARMS + 10, 3
    counts = np.arange(1.0, arms + 1)
    gram = np.broadcast_to(np.eye(d), (arms, d, d)).copy()
    _, played, _, _ = decode_linear(encode_linear(counts, gram, np.zeros((arms, d)), 0), arms, d)
    assert played.tolist() == list(range(10, arms))
    for n_arms, dim in ((10, 9), (200, 30), (3, 2)):
        full = np.ones(n_arms)
        entry = len(encode_linear(full, np.zeros((n_arms, dim, dim)), np.zeros((n_arms, dim)), 0))
        users = linear_sample_users(n_arms, dim)
        assert users >= MIN_LINEAR_SAMPLE
        assert users * entry <= max(LINEAR_SAMPLE_BYTES, MIN_LINEAR_SAMPLE * entry)
