"""Contextual policies through the real service: features in the request, pooled priors."""

from __future__ import annotations

import asyncio

import pytest

from rewardloop.client import AsyncClient
from rewardloop.simulator import Population
from rewardloop.simulator.drive import run_population
from tests.conftest import LEARN_ITEMS

pytestmark = pytest.mark.cluster

USERS = 150
ROUNDS = 30  # budget: USERS * ROUNDS = 4,500 decisions
TAIL = 10  # measured over the last TAIL rounds


def contextual_population(seed: int = 1) -> Population:
    return Population(n_users=USERS, n_items=LEARN_ITEMS, seed=seed, taste_dim=4, taste_strength=2.0, base_ctr=0.03)


async def refresh_priors(service: object) -> None:
    await asyncio.gather(*(a.refresh_priors.remote() for a in service.actors))  # type: ignore[attr-defined]


@pytest.mark.parametrize("surface", ["ctx_linucb", "ctx_lints"])
async def test_contextual_policy_nears_the_oracle(service: object, surface: str) -> None:
    population = contextual_population()
    async with AsyncClient(service.target, default_timeout=10) as client:  # type: ignore[attr-defined]
        run = await run_population(
            client, population, surface, ROUNDS, seed=5, user_prefix=f"{surface}-", contextual=True,
            between_rounds=lambda: refresh_priors(service),
        )  # fmt: skip
    first = ROUNDS - TAIL
    learned, oracle, random = run.expected_ctr(first), run.oracle_ctr(first), run.random_ctr(first)
    print(f"{surface}: CTR {learned:.3f}, oracle {oracle:.3f}, random {random:.3f}")
    assert learned >= 1.5 * random, f"{surface}: {learned:.3f} vs random {random:.3f}"
    assert learned >= 0.85 * oracle, f"{surface}: {learned:.3f} vs oracle {oracle:.3f}"
