"""Cold start from the population prior, and recovery from drifting tastes, through the real service."""

from __future__ import annotations

import asyncio

import pytest

from rewardloop.client import AsyncClient
from rewardloop.demo import scenarios
from rewardloop.demo.drive import run_population
from rewardloop.simulator.population import Population
from tests.conftest import LEARN_ITEMS
from tests.integration.test_contextual import refresh_priors

pytestmark = pytest.mark.cluster


async def test_new_users_start_from_the_population_and_personalise_within_three_events(service: object) -> None:
    async with AsyncClient(service.target, default_timeout=10) as client:  # type: ignore[attr-defined]
        outcome = await scenarios.cold_start(client, "cold_ucb", lambda: refresh_priors(service))
    print(outcome)
    assert outcome.divergent_users > 60
    # From the first request, new users do better than random...
    assert outcome.first_request.lift >= 1.2
    # ...and after three feedback events, users unlike the population do measurably better
    # than the population model alone gives them (their first decision: no evidence of their own).
    assert outcome.after_three >= 1.15 * outcome.population_alone


async def test_a_new_users_first_request_is_the_priors_best_item_unless_explore_first(service: object) -> None:
    population = Population(n_users=100, n_items=LEARN_ITEMS, seed=5, taste_dim=4, taste_strength=2.0, base_ctr=0.03)
    veterans, newcomers = list(range(60)), list(range(60, 100))
    async with AsyncClient(service.target, default_timeout=10) as client:  # type: ignore[attr-defined]
        first, shown = {}, {}
        for surface in ("first_ts", "first_ts_explore"):
            await run_population(
                client, population, surface, 8, users=veterans, seed=1, user_prefix=surface,
                between_rounds=lambda: refresh_priors(service),
            )  # fmt: skip
            await refresh_priors(service)
            # Every newcomer's first request before any of them reports (a report would move the
            # population prior at the shards' next refresh, within a second).
            replies = await asyncio.gather(
                *(client.recommend(f"{surface}{population.user_ids[u]}", surface) for u in newcomers)
            )
            first[surface] = [reply.items[0].item_id for reply in replies]
            arrivals = await run_population(
                client, population, surface, 2, users=newcomers, seed=2, user_prefix=surface
            )
            shown[surface] = arrivals.shown_per_round
    # No evidence of their own: every newcomer is served the one item the population rates best...
    assert len(set(first["first_ts"])) == 1
    # ...and with one event of their own, Thompson's draws take over (as they do from the start
    # on the twin that explores first).
    assert len(set(shown["first_ts"][1])) >= 3
    assert len(set(first["first_ts_explore"])) >= 3


# 2 x 60 users x 500 decisions: about 4 minutes on a quiet 2-core box, and 3-4x that with line
# coverage tracing the shard actors; `make test-all` and `bench/learning.py --only drift` (5 seeds)
# run it, `make test` does not.
@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_discounted_policy_recovers_from_drift_and_its_stationary_twin_does_not(service: object) -> None:
    """Budget: 200 decisions per user after the shift; measured over the last 50."""
    async with AsyncClient(service.target, default_timeout=10) as client:  # type: ignore[attr-defined]
        # Both twins at once (other surfaces, other users, per-user RNGs): the same outcomes, sooner.
        discounted, stationary = await asyncio.gather(
            scenarios.drift(client, "drift_dts"), scenarios.drift(client, "drift_ts")
        )
    print(
        f"share of the new oracle: discounted {discounted.oracle_ratio:.3f}, stationary {stationary.oracle_ratio:.3f}"
    )
    assert discounted.oracle_ratio >= 0.90
    assert stationary.oracle_ratio < 0.90
