"""The simulated population: determinism, validation, realistic and learnable CTRs, responses."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rewardloop.simulator import Population, Response

SEEDS = [0, 1, 7]


def probability_matrix(pop: Population) -> np.ndarray:
    return np.array([pop.click_probabilities(u) for u in range(pop.n_users)])


def segment_favourites(pop: Population) -> list[int]:
    probabilities = probability_matrix(pop)
    segments = np.array([pop.segment_of(u) for u in range(pop.n_users)])
    return [int(probabilities[segments == s].mean(axis=0).argmax()) for s in range(pop.n_segments)]


def draw(pop: Population, user: int, item: int, n: int, seed: int) -> list[Response]:
    rng = np.random.default_rng(seed)
    return [pop.respond(user, item, rng) for _ in range(n)]


# --- determinism -------------------------------------------------------------------------------


def test_same_seed_same_population() -> None:
    a, b = Population(seed=7), Population(seed=7)
    assert a == b
    assert np.array_equal(probability_matrix(a), probability_matrix(b))
    assert [a.segment_of(u) for u in range(a.n_users)] == [b.segment_of(u) for u in range(b.n_users)]


def test_different_seed_different_tastes() -> None:
    assert not np.allclose(probability_matrix(Population(seed=1)), probability_matrix(Population(seed=2)))


def test_same_rng_seed_same_responses() -> None:
    pop = Population(seed=3)
    assert draw(pop, 5, 9, 200, seed=11) == draw(pop, 5, 9, 200, seed=11)
    assert draw(pop, 5, 9, 200, seed=11) != draw(pop, 5, 9, 200, seed=12)


def test_respond_uses_a_fixed_number_of_draws() -> None:
    pop = Population(seed=3)
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    pop.respond(0, 0, rng_a)
    pop.respond(0, 1, rng_b)
    assert rng_a.random() == rng_b.random()


def test_latent_arrays_are_read_only() -> None:
    pop = Population()
    with pytest.raises(ValueError, match="read-only"):
        pop.item_vectors[0, 0] = 1.0


def test_ids() -> None:
    pop = Population(n_users=12_000, n_items=5, seed=0)
    assert pop.user_ids[0] == "sim-u00000" and pop.user_ids[-1] == "sim-u11999"
    assert pop.item_ids == ("item-000", "item-001", "item-002", "item-003", "item-004")
    assert pop.item_index("item-003") == 3
    with pytest.raises(ValueError, match="item_id 'item-999' is not in this catalogue of 5 items"):
        pop.item_index("item-999")


# --- taste shift -------------------------------------------------------------------------------


def test_shifted_keeps_ids_and_catalogue_and_redraws_tastes() -> None:
    pop = Population(seed=7)
    later = pop.shifted(seed=100)
    assert later.user_ids == pop.user_ids and later.item_ids == pop.item_ids
    assert np.array_equal(later.item_vectors, pop.item_vectors)
    assert later == pop.shifted(seed=100)
    assert np.array_equal(probability_matrix(later), probability_matrix(pop.shifted(seed=100)))
    before, after = probability_matrix(pop), probability_matrix(later)
    # Most users' favourite item changes; the population stays just as realistic.
    assert np.mean(before.argmax(axis=1) != after.argmax(axis=1)) > 0.7
    assert 0.05 <= later.random_ctr() <= 0.15


def test_shifted_back_to_own_seed_is_the_original() -> None:
    pop = Population(seed=7)
    assert np.array_equal(probability_matrix(pop.shifted(seed=7)), probability_matrix(pop))


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_users": 0}, r"n_users must be >= 1, got 0"),
        ({"n_users": 2.5}, r"n_users must be an integer, got 2.5"),
        ({"n_items": 0}, r"n_items must be >= 1, got 0"),
        ({"seed": -1}, r"seed must be >= 0, got -1"),
        ({"n_segments": 0}, r"n_segments must be >= 1, got 0"),
        ({"n_users": 3, "n_segments": 4}, r"n_segments must be <= n_users \(3\), got 4"),
        ({"taste_dim": True}, r"taste_dim must be an integer, got True"),
        ({"base_ctr": 0.0}, r"base_ctr must be in \(0, 1\), got 0.0"),
        ({"base_ctr": 1.0}, r"base_ctr must be in \(0, 1\), got 1.0"),
        ({"taste_strength": -0.1}, r"taste_strength must be finite and >= 0, got -0.1"),
        ({"taste_strength": math.inf}, r"taste_strength must be finite and >= 0, got inf"),
        ({"individuality": 1.5}, r"individuality must be in \[0, 1\], got 1.5"),
        ({"rating_rate": math.nan}, r"rating_rate must be in \[0, 1\], got nan"),
        ({"taste_seed": -2}, r"taste_seed must be >= 0, got -2"),
    ],
)
def test_bad_parameters_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Population(**kwargs)


def test_bad_indices_are_named() -> None:
    pop = Population(n_users=10, n_items=5)
    with pytest.raises(IndexError, match=r"user_index must be an integer in \[0, 10\), got 10"):
        pop.click_probabilities(10)
    with pytest.raises(IndexError, match=r"item_index must be an integer in \[0, 5\), got -1"):
        pop.respond(0, -1, np.random.default_rng(0))
    with pytest.raises(IndexError, match=r"candidates must lie in \[0, 5\)"):
        pop.oracle_ctr(candidates=[0, 5])
    with pytest.raises(ValueError, match="user_indices must be a non-empty sequence of integers"):
        pop.random_ctr(user_indices=[])


# --- realistic and learnable -------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_ctr_ranges(seed: int) -> None:
    pop = Population(seed=seed)
    random_ctr, oracle_ctr = pop.random_ctr(), pop.oracle_ctr()
    assert 0.05 <= random_ctr <= 0.15
    assert 3.0 <= oracle_ctr / random_ctr <= 6.0


@pytest.mark.parametrize("seed", SEEDS)
def test_every_user_has_a_clearly_better_item(seed: int) -> None:
    probabilities = probability_matrix(Population(seed=seed))
    ratio = probabilities.max(axis=1) / probabilities.mean(axis=1)
    assert np.quantile(ratio, 0.1) > 2.0


def test_ctr_helpers_agree_with_the_matrix() -> None:
    pop = Population(n_users=20, n_items=10, seed=4)
    probabilities = probability_matrix(pop)
    users, candidates = [1, 3, 5], [2, 4, 8]
    assert pop.random_ctr(users, candidates) == pytest.approx(probabilities[np.ix_(users, candidates)].mean())
    assert pop.oracle_ctr(users, candidates) == pytest.approx(
        probabilities[np.ix_(users, candidates)].max(axis=1).mean()
    )
    assert pop.oracle_ctr(candidates=[6]) == pytest.approx(pop.random_ctr(candidates=[6]))
    assert pop.click_probability(3, 8) == probabilities[3, 8]


@pytest.mark.parametrize("seed", SEEDS)
def test_segments_prefer_different_items(seed: int) -> None:
    pop = Population(seed=seed)
    assert len(set(segment_favourites(pop))) >= pop.n_segments - 1


def test_segment_shares_structure() -> None:
    # Cold start can borrow from the segment: a user's click log-odds over items correlate with
    # those of users in the same segment far more than with users of other segments.
    pop = Population(seed=7)
    logits = np.log(probability_matrix(pop) / (1 - probability_matrix(pop)))
    correlations = np.corrcoef(logits)
    segments = np.array([pop.segment_of(u) for u in range(pop.n_users)])
    same = segments[:, None] == segments[None, :]
    off_diagonal = ~np.eye(pop.n_users, dtype=bool)
    assert correlations[same & off_diagonal].mean() > 0.5
    assert abs(correlations[~same].mean()) < 0.2
    assert np.bincount(segments).tolist() == [50, 50, 50, 50]


def test_stronger_taste_widens_the_gap() -> None:
    mild, strong = Population(seed=1, taste_strength=0.5), Population(seed=1, taste_strength=2.0)
    assert strong.oracle_ctr() / strong.random_ctr() > mild.oracle_ctr() / mild.random_ctr() + 1.0


# --- responses ---------------------------------------------------------------------------------


def test_response_invariants() -> None:
    pop = Population(seed=2, base_ctr=0.3, rating_rate=0.5)
    rng = np.random.default_rng(5)
    responses = [pop.respond(int(u), int(i), rng) for u, i in rng.integers(0, [200, 50], size=(3000, 2))]
    assert any(r.clicked for r in responses) and any(r.liked for r in responses)
    for r in responses:
        assert r.dwell_seconds >= 0.0
        assert r.rating is None or (r.clicked and r.rating in {1.0, 2.0, 3.0, 4.0, 5.0})
        assert r.clicked or (not r.liked and r.dwell_seconds <= 3.0)
        assert isinstance(r.clicked, bool) and isinstance(r.liked, bool)


def test_empirical_click_rate_matches_probability() -> None:
    pop = Population(seed=7)
    probabilities = pop.click_probabilities(3)
    n = 4000
    for item in (
        int(probabilities.argmax()),
        int(np.argsort(probabilities)[25]),
        int(probabilities.argmin()),
    ):
        p = pop.click_probability(3, item)
        rate = np.mean([r.clicked for r in draw(pop, 3, item, n, seed=item)])
        assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-3


def test_engagement_grows_with_affinity() -> None:
    pop = Population(seed=7, base_ctr=0.5, rating_rate=0.5)
    probabilities = pop.click_probabilities(0)
    clicks = {
        which: [r for r in draw(pop, 0, item, 3000, seed=1) if r.clicked]
        for which, item in (("worst", int(probabilities.argmin())), ("best", int(probabilities.argmax())))
    }

    def mean_of(which: str, field: str) -> float:
        values = [getattr(r, field) for r in clicks[which] if getattr(r, field) is not None]
        return float(np.mean(values))

    assert mean_of("best", "dwell_seconds") > 2 * mean_of("worst", "dwell_seconds")
    assert mean_of("best", "rating") > mean_of("worst", "rating") + 1.5
    assert mean_of("best", "liked") > mean_of("worst", "liked") + 0.2
    rated = np.mean([r.rating is not None for r in clicks["best"]])
    assert rated == pytest.approx(0.5, abs=0.05)


def test_recommended_small_catalogue_is_learnable_per_user() -> None:
    # The setting the module docstring recommends for learning tests: a per-user epsilon-greedy
    # learns within 60 interactions (measured 0.38 CTR over steps 31-60 vs 0.10 random).
    pop = Population(n_items=30, taste_strength=2.0, base_ctr=0.03)
    rng = np.random.default_rng(0)
    late_clicks = 0
    for user in range(pop.n_users):
        shown, clicked = np.zeros(pop.n_items), np.zeros(pop.n_items)
        for step in range(60):
            explore = rng.random() < 0.1
            item = int(rng.integers(pop.n_items)) if explore else int(np.argmax((clicked + 1) / (shown + 2)))
            response = pop.respond(user, item, rng)
            shown[item] += 1
            clicked[item] += response.clicked
            late_clicks += step >= 30 and response.clicked
    assert late_clicks / (30 * pop.n_users) > 3 * pop.random_ctr()


# --- features and context ----------------------------------------------------------------------

CONTEXTUAL = {"n_items": 10, "taste_dim": 4, "taste_strength": 2.0, "base_ctr": 0.03}
"""The module docstring's recommended setting for contextual learning tests."""
TRAIN_USERS, HELD_OUT_USERS = range(150), range(150, 200)


def request_pairs(pop: Population, users: range, per_user: int, seed: int) -> tuple[list[int], np.ndarray]:
    """`per_user` requests of every user in `users`, each with a fresh context."""
    rng = np.random.default_rng(seed)
    pair_users = [u for u in users for _ in range(per_user)]
    return pair_users, np.array([pop.draw_context(u, rng) for u in pair_users])


def design(pop: Population, user: int, context: np.ndarray) -> np.ndarray:
    return np.concatenate(([1.0], pop.user_features(user), context))


def fit_per_item_ridge(pop: Population, n_samples: int, users: range, seed: int, columns: int) -> np.ndarray:
    """Per-item ridge (lambda 1, as LinUCB starts) of clicks on the first `columns` entries of
    `design`, from uniformly logged requests; coefficients of shape (n_items, columns)."""
    rng = np.random.default_rng(seed)
    gram = np.repeat(np.eye(columns)[None], pop.n_items, axis=0)
    moments = np.zeros((pop.n_items, columns))
    for _ in range(n_samples):
        user = users[int(rng.integers(len(users)))]
        context = pop.draw_context(user, rng)
        item = int(rng.integers(pop.n_items))
        x = design(pop, user, context)[:columns]
        gram[item] += np.outer(x, x)
        moments[item] += pop.respond(user, item, rng, context).clicked * x
    return np.linalg.solve(gram, moments[..., None])[..., 0]


def expected_ctr(
    pop: Population, users: list[int], contexts: np.ndarray, choose: Callable[[int, np.ndarray], int]
) -> float:
    """Mean click probability of the items `choose(user, context)` picks, over the pairs."""
    return float(np.mean([pop.click_probability(u, choose(u, c), c) for u, c in zip(users, contexts, strict=True)]))


def test_same_seed_same_features_and_contexts() -> None:
    a, b = Population(seed=7), Population(seed=7)
    assert all(np.array_equal(a.user_features(u), b.user_features(u)) for u in range(a.n_users))
    users_a, contexts_a = request_pairs(a, range(20), 3, seed=5)
    users_b, contexts_b = request_pairs(b, range(20), 3, seed=5)
    assert np.array_equal(contexts_a, contexts_b)
    assert a.oracle_ctr_contextual(users_a, contexts_a) == b.oracle_ctr_contextual(users_b, contexts_b)
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    assert [a.respond(3, 4, rng_a, contexts_a[0]) for _ in range(50)] == [
        b.respond(3, 4, rng_b, contexts_b[0]) for _ in range(50)
    ]
    assert not np.allclose(Population(seed=8).user_features(0), a.user_features(0))


def test_no_context_is_the_context_free_model_bit_for_bit() -> None:
    # Golden values recorded from the simulator before it had features or context (equal to the
    # last bit on the machine that recorded them; 1e-12 leaves room for another BLAS).
    pop = Population(seed=3)
    golden = [0.42248788073331506, 0.005861917605891737, 0.3059332796160919, 0.17445838443707326]
    assert pop.click_probabilities(5)[:4].tolist() == pytest.approx(golden, rel=1e-12)
    assert (pop.oracle_ctr(), pop.random_ctr()) == pytest.approx((0.38609760157046435, 0.08820023571336587), rel=1e-12)
    last = draw(pop, 5, 9, 40, seed=11)[-1]
    assert last._replace(dwell_seconds=0.0) == Response(clicked=True, dwell_seconds=0.0, rating=None, liked=True)
    assert last.dwell_seconds == pytest.approx(52.21411581511071, rel=1e-12)
    # The new parameters do not touch it, and a zero context is no context.
    other = Population(seed=3, n_user_features=2, feature_noise=0.9, n_context=5, context_strength=2.0)
    assert np.array_equal(probability_matrix(other), probability_matrix(pop))
    assert draw(other, 5, 9, 100, seed=11) == draw(pop, 5, 9, 100, seed=11)
    # Exact on any BLAS: a zero context shifts the tastes by exact zeros before the same product.
    assert np.array_equal(other.click_probabilities(5, np.zeros(5)), pop.click_probabilities(5))
    assert other.best_item(5, np.zeros(5)) == other.best_item(5) == int(pop.click_probabilities(5).argmax())


def test_context_enters_every_entry_point_alike() -> None:
    pop = Population(seed=4, n_items=20)
    users, contexts = request_pairs(pop, range(30), 2, seed=9)
    rows = np.array([pop.click_probabilities(u, c) for u, c in zip(users, contexts, strict=True)])
    assert pop.oracle_ctr_contextual(users, contexts) == pytest.approx(rows.max(axis=1).mean())
    assert pop.random_ctr_contextual(users, contexts) == pytest.approx(rows.mean())
    assert pop.random_ctr_contextual(users, contexts, candidates=[3, 7]) == pytest.approx(rows[:, [3, 7]].mean())
    assert pop.click_probability(users[5], 11, contexts[5]) == rows[5, 11]
    assert pop.best_item(users[5], contexts[5]) == rows[5].argmax()
    # respond draws its clicks from the contextual probability.
    context = contexts[0]
    item = int(np.argmax(pop.click_probabilities(0, context) - pop.click_probabilities(0)))
    rng = np.random.default_rng(2)
    rate = np.mean([pop.respond(0, item, rng, context).clicked for _ in range(4000)])
    assert rate == pytest.approx(pop.click_probability(0, item, context), abs=0.03)
    assert abs(rate - pop.click_probability(0, item)) > 0.05


def test_feature_and_context_dicts() -> None:
    pop = Population(n_users=3, n_segments=1, n_user_features=3, n_context=2)
    features = pop.user_feature_dict(1)
    assert list(features) == ["u0", "u1", "u2"] == list(pop.user_feature_names)
    assert list(features.values()) == pop.user_features(1).tolist()
    assert all(type(value) is float for value in features.values())
    assert pop.context_dict(np.array([0.5, -1])) == {"c0": 0.5, "c1": -1.0}
    assert Population(n_context=0).draw_context(0, np.random.default_rng(0)).shape == (0,)


def test_draw_context_uses_n_context_draws() -> None:
    pop = Population(n_context=3)
    rng, reference = np.random.default_rng(4), np.random.default_rng(4)
    assert np.array_equal(pop.draw_context(0, rng), reference.standard_normal(3))
    assert rng.random() == reference.random()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_user_features": -1}, r"n_user_features must be >= 0, got -1"),
        ({"n_context": 1.0}, r"n_context must be an integer, got 1.0"),
        ({"feature_noise": -0.5}, r"feature_noise must be finite and >= 0, got -0.5"),
        ({"context_strength": math.nan}, r"context_strength must be finite and >= 0, got nan"),
    ],
)
def test_bad_feature_and_context_parameters_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Population(**kwargs)


def test_bad_contexts_are_named() -> None:
    pop = Population(n_users=10, n_items=5)
    with pytest.raises(ValueError, match=r"context must have shape \(2,\), got \(3,\)"):
        pop.click_probabilities(0, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="context must be finite"):
        pop.respond(0, 1, np.random.default_rng(0), [0.0, math.inf])
    with pytest.raises(ValueError, match="context must be an array of numbers"):
        pop.best_item(0, ["a", "b"])
    with pytest.raises(ValueError, match=r"contexts must have shape .* = \(2, 2\), got \(3, 2\)"):
        pop.oracle_ctr_contextual([0, 1], np.zeros((3, 2)))
    with pytest.raises(IndexError, match=r"user_index must be an integer in \[0, 10\), got 10"):
        pop.user_features(10)


def test_features_have_unit_scale_and_carry_the_taste() -> None:
    pop = Population(seed=2)
    features = np.array([pop.user_features(u) for u in range(pop.n_users)])
    assert features.shape == (200, 6)
    # Unit scale over populations; within one, four segment centroids make each feature's spread
    # vary (0.5-1.7 over seeds 0-39), while the overall root mean square stays within 0.75-1.2.
    assert 0.75 <= math.sqrt(np.mean(features**2)) <= 1.25
    # A linear map from features, fitted on 150 users, predicts the click log-odds of the other 50
    # over all items (six noisy features of an eight-dimensional taste, so not all of them).
    logits = np.log(probability_matrix(pop) / (1 - probability_matrix(pop)))
    x = np.hstack([np.ones((pop.n_users, 1)), features])
    coefficients = np.linalg.lstsq(x[:150], logits[:150], rcond=None)[0]
    residual = logits[150:] - x[150:] @ coefficients
    explained = 1 - residual.var() / logits[150:].var()
    assert explained > 0.6
    noisy = Population(seed=2, feature_noise=3.0)
    noisy_features = np.array([noisy.user_features(u) for u in range(pop.n_users)])
    x = np.hstack([np.ones((pop.n_users, 1)), noisy_features])
    coefficients = np.linalg.lstsq(x[:150], logits[:150], rcond=None)[0]
    assert 1 - (logits[150:] - x[150:] @ coefficients).var() / logits[150:].var() < explained - 0.3


@pytest.mark.parametrize(("kwargs", "low", "high"), [({}, 0.35, 0.5), (CONTEXTUAL, 0.2, 0.45)])
@pytest.mark.parametrize("seed", SEEDS)
def test_context_changes_the_best_item_for_a_sizable_share(
    kwargs: dict[str, Any], low: float, high: float, seed: int
) -> None:
    pop = Population(seed=seed, **kwargs)
    users, contexts = request_pairs(pop, range(pop.n_users), 5, seed=seed)
    share = np.mean([pop.best_item(u, c) != pop.best_item(u) for u, c in zip(users, contexts, strict=True)])
    assert low <= share <= high
    assert Population(seed=seed, context_strength=0.0, **kwargs).best_item(0, contexts[0]) == pop.best_item(0)


@pytest.mark.parametrize("seed", SEEDS)
def test_linear_model_on_features_and_context_nears_the_contextual_oracle(seed: int) -> None:
    # The contextual bandit's acceptance bar is 85% of the oracle CTR. A per-item linear model of
    # [1, user features, context], fitted on 5,000 uniformly logged requests, must clear it for users
    # it never saw (measured over seeds 0-19: mean 91%, lowest 87%; 94%, 93%, 88% for seeds 0, 1, 7),
    # and the user features must matter: the population's best item in each context, chosen from
    # the true CTRs, gets 54-76% of the oracle.
    pop = Population(seed=seed, **CONTEXTUAL)
    columns = 1 + pop.n_user_features + pop.n_context
    coefficients = fit_per_item_ridge(pop, 5000, TRAIN_USERS, seed=seed, columns=columns)
    users, contexts = request_pairs(pop, HELD_OUT_USERS, 20, seed=seed + 1)
    oracle, random = pop.oracle_ctr_contextual(users, contexts), pop.random_ctr_contextual(users, contexts)
    learned = expected_ctr(pop, users, contexts, lambda u, c: int(np.argmax(coefficients @ design(pop, u, c))))
    assert learned >= 0.85 * oracle
    assert learned >= 2.5 * random

    everyone = list(range(pop.n_users))

    def population_favourite(_: int, context: np.ndarray) -> int:
        same_context = np.tile(context, (pop.n_users, 1))
        means = [pop.random_ctr_contextual(everyone, same_context, [j]) for j in range(pop.n_items)]
        return int(np.argmax(means))

    sample = slice(None, None, 10)  # a favourite costs n_items population-wide averages per request
    favourite = expected_ctr(pop, users[sample], contexts[sample], population_favourite)
    favourite /= pop.oracle_ctr_contextual(users[sample], contexts[sample])
    assert favourite < 0.8
    assert learned / oracle > favourite + 0.15


def test_shifted_redraws_features_under_the_same_feature_map() -> None:
    pop = Population(seed=7)
    later = pop.shifted(seed=100)
    before = np.array([pop.user_features(u) for u in range(pop.n_users)])
    after = np.array([later.user_features(u) for u in range(pop.n_users)])
    assert np.abs(before - after).mean() > 0.5
    assert np.array_equal(np.array([pop.shifted(seed=7).user_features(u) for u in range(pop.n_users)]), before)
    # The context moves click log-odds by the same amount for everyone, before and after the shift.
    context = np.array([1.5, -0.5])

    def lift(p: Population, user: int) -> np.ndarray:
        with_context, without = p.click_probabilities(user, context), p.click_probabilities(user)
        return np.log(with_context / (1 - with_context)) - np.log(without / (1 - without))

    assert np.allclose(lift(pop, 0), lift(later, 0)) and np.allclose(lift(pop, 0), lift(pop, 9))


def test_recommended_contextual_setting_is_learnable_by_linucb() -> None:
    # The setting recommended for the service's contextual-bandit test: disjoint LinUCB (alpha 1,
    # ridge 1) on [1, user features, context], its model updated once per round as a batching shard
    # would. Over rounds 21-30 of 150 users x 30 rounds it reaches 92% of the contextual oracle on
    # average over seeds 0-9 (88-96%) and 2.8-3.7x random (measured; seed 1 here: 92%, 3.7x).
    pop = Population(n_users=150, seed=1, **CONTEXTUAL)
    dim = 1 + pop.n_user_features + pop.n_context
    gram, moments = np.repeat(np.eye(dim)[None], pop.n_items, axis=0), np.zeros((pop.n_items, dim))
    rngs = [np.random.default_rng([5, u]) for u in range(pop.n_users)]
    tail_users, tail_contexts, tail_clicks = [], [], 0
    for round_ in range(30):
        inverse = np.linalg.inv(gram)
        coefficients = np.einsum("kij,kj->ki", inverse, moments)
        shown = []
        for user in range(pop.n_users):
            context = pop.draw_context(user, rngs[user])
            x = design(pop, user, context)
            item = int(np.argmax(coefficients @ x + np.sqrt(np.einsum("i,kij,j->k", x, inverse, x))))
            clicked = pop.respond(user, item, rngs[user], context).clicked
            shown.append((item, x, clicked))
            if round_ >= 20:
                tail_users.append(user)
                tail_contexts.append(context)
                tail_clicks += clicked
        for item, x, clicked in shown:
            gram[item] += np.outer(x, x)
            moments[item] += clicked * x
    ctr = tail_clicks / len(tail_users)
    assert ctr >= 0.85 * pop.oracle_ctr_contextual(tail_users, tail_contexts)
    assert ctr >= 1.5 * pop.random_ctr_contextual(tail_users, tail_contexts)
