"""Cold start from the population prior, and recovery from drifting tastes, through the real service."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from rewardloop.client import AsyncClient
from rewardloop.simulator import Population
from rewardloop.simulator.drive import run_population
from tests.conftest import DRIFT_ITEMS, LEARN_ITEMS

pytestmark = pytest.mark.cluster


async def refresh_priors(service: object) -> None:
    await asyncio.gather(*(a.refresh_priors.remote() for a in service.actors))  # type: ignore[attr-defined]


async def test_new_users_start_from_the_population_and_personalise_within_three_events(service: object) -> None:
    population = Population(n_users=400, n_items=LEARN_ITEMS, seed=1, taste_dim=4, taste_strength=2.0, base_ctr=0.03)
    veterans, newcomers = list(range(200)), list(range(200, 400))
    probabilities = np.array([population.click_probabilities(u) for u in range(400)])
    population_best = int(probabilities[veterans].mean(axis=0).argmax())
    # Users whose taste differs from the population's: their own best item is another one.
    divergent = [u for u in newcomers if probabilities[u].argmax() != population_best]
    assert len(divergent) > 60

    async with AsyncClient(service.target, default_timeout=10) as client:  # type: ignore[attr-defined]
        await run_population(
            client, population, "cold_ucb", 15, users=veterans, seed=3, user_prefix="cold-",
            between_rounds=lambda: refresh_priors(service),
        )  # fmt: skip
        arrivals = await run_population(client, population, "cold_ucb", 1, users=newcomers, seed=4, user_prefix="cold-")
        personal = await run_population(
            client, population, "cold_ucb", 6, users=divergent, seed=4, user_prefix="cold-div-",
            between_rounds=lambda: refresh_priors(service),
        )  # fmt: skip

    # From the first request, new users do better than random...
    first, random = arrivals.expected_ctr(), arrivals.random_ctr()
    print(f"first request: CTR {first:.3f} vs random {random:.3f}")
    assert first >= 1.2 * random
    # ...and after three feedback events, users unlike the population do measurably better
    # than the population model alone gives them (their first decision: no evidence of their own).
    alone, after_three = personal.expected_ctr(0, 1), personal.expected_ctr(3, 6)
    print(f"divergent users: population model alone {alone:.3f}, after 3 events {after_three:.3f}")
    assert after_three >= 1.15 * alone


PRE_SHIFT_ROUNDS = 300
POST_SHIFT_ROUNDS = 200  # recovery budget: 200 decisions per user after the shift
TAIL = 50


async def test_discounted_policy_recovers_from_drift_and_its_stationary_twin_does_not(service: object) -> None:
    before = Population(n_users=60, n_items=DRIFT_ITEMS, seed=3, taste_dim=4, taste_strength=5.0, base_ctr=0.1)
    after = before.shifted(seed=99)
    changed = [u for u in range(60) if before.best_item(u) != after.best_item(u)]
    assert len(changed) > 30
    ratios = {}
    async with AsyncClient(service.target, default_timeout=10) as client:  # type: ignore[attr-defined]
        for surface in ("drift_dts", "drift_ts"):
            prefix = f"{surface}-"
            await run_population(client, before, surface, PRE_SHIFT_ROUNDS, users=changed, seed=7, user_prefix=prefix)
            run = await run_population(
                client, after, surface, POST_SHIFT_ROUNDS, users=changed, seed=8, user_prefix=prefix,
                first_round=PRE_SHIFT_ROUNDS,
            )  # fmt: skip
            tail = POST_SHIFT_ROUNDS - TAIL
            ratios[surface] = run.expected_ctr(tail) / run.oracle_ctr(tail)
    print(f"share of the new oracle's CTR in the last {TAIL} rounds: {ratios}")
    assert ratios["drift_dts"] >= 0.90
    assert ratios["drift_ts"] < 0.90
