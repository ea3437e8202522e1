"""Contextual policies through the real service: features in the request, pooled priors."""

from __future__ import annotations

import asyncio

import pytest

from rewardloop.client import AsyncClient
from rewardloop.demo import scenarios

pytestmark = pytest.mark.cluster


async def refresh_priors(service: object) -> None:
    await asyncio.gather(*(a.refresh_priors.remote() for a in service.actors))  # type: ignore[attr-defined]


@pytest.mark.parametrize("surface", ["ctx_linucb", "ctx_lints"])
async def test_contextual_policy_nears_the_oracle(service: object, surface: str) -> None:
    """Budget: 150 users x 30 decisions = 4,500 decisions, measured over the last 10 rounds.

    The share of the oracle varies with the order in which the service sees the requests (prior
    refreshes landing mid-round, summation order under another hash seed): for ctx_linucb we measured
    0.79 to 0.94 over runs (alone, under CPU load, inside the suite, PYTHONHASHSEED 0 or random),
    so the bound is 0.75, with random at ~0.25 of the oracle."""
    async with AsyncClient(service.target, default_timeout=10) as client:  # type: ignore[attr-defined]
        outcome = await scenarios.contextual(client, surface, lambda: refresh_priors(service))
    print(f"{surface}: {outcome}")
    assert outcome.lift >= 1.5, outcome
    assert outcome.oracle_ratio >= 0.75, outcome
