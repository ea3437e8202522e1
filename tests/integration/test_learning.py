"""Learning through the real service: simulated users, SDK, gRPC, shards, Redis."""

from __future__ import annotations

import pytest

from rewardloop.client import AsyncClient
from rewardloop.simulator import scenarios

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("surface", ["learn_ucb", "learn_ts"])
async def test_policy_beats_uniform_random_by_30_percent(service: object, surface: str) -> None:
    """Budget: 60 users x 80 decisions = 4,800 decisions; CTR over the last 30 rounds."""
    async with AsyncClient(service.target, default_timeout=10) as client:  # type: ignore[attr-defined]
        outcome = await scenarios.context_free(client, surface)
    print(f"{surface}: {outcome}")
    assert outcome.lift >= 1.30, outcome
