"""Learning through the real service: simulated users, SDK, gRPC, shards, Redis."""

from __future__ import annotations

import pytest

from rewardloop.client import AsyncClient
from rewardloop.simulator import Population
from rewardloop.simulator.drive import random_policy_ctr, run_population
from tests.conftest import LEARN_ITEMS

pytestmark = pytest.mark.cluster

USERS = 60
ROUNDS = 80  # decision budget: USERS * ROUNDS = 4,800 decisions per algorithm
TAIL = 30  # CTR is measured over the last TAIL rounds of the budget
REQUIRED_LIFT = 1.30


@pytest.mark.parametrize("surface", ["learn_ucb", "learn_ts"])
async def test_policy_beats_uniform_random_by_30_percent(service: object, surface: str) -> None:
    population = Population(n_users=USERS, n_items=LEARN_ITEMS, seed=3, taste_strength=2.0, base_ctr=0.03)
    async with AsyncClient(service.target, default_timeout=10) as client:  # type: ignore[attr-defined]
        run = await run_population(client, population, surface, ROUNDS, seed=5, user_prefix=f"{surface}-")
    learned = run.ctr(ROUNDS - TAIL)
    random = random_policy_ctr(population, list(range(USERS)), ROUNDS, seed=5)
    assert run.acknowledged_events == USERS * ROUNDS
    assert learned >= REQUIRED_LIFT * random, f"{surface}: CTR {learned:.3f} vs random {random:.3f}"
