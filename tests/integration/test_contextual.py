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
    """Budget: 150 users x 30 decisions = 4,500 decisions, measured over the last 10 rounds."""
    async with AsyncClient(service.target, default_timeout=10) as client:  # type: ignore[attr-defined]
        outcome = await scenarios.contextual(client, surface, lambda: refresh_priors(service))
    print(f"{surface}: {outcome}")
    assert outcome.lift >= 1.5, outcome
    assert outcome.oracle_ratio >= 0.85, outcome
