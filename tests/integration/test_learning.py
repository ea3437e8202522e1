"""Learning through the real service: simulated users, SDK, gRPC, shards, Redis."""

from __future__ import annotations

import pytest

from rewardloop.client import AsyncClient
from rewardloop.demo import scenarios

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("surface", ["learn_ucb", "learn_ts"])
async def test_policy_beats_uniform_random_by_30_percent(service: object, surface: str) -> None:
    """Budget: 60 users x 80 decisions = 4,800 decisions; CTR over the last 30 rounds."""
    async with AsyncClient(service.target, default_timeout=10) as client:  # type: ignore[attr-defined]
        outcome = await scenarios.context_free(client, surface)
    print(f"{surface}: {outcome}")
    assert outcome.lift >= 1.30, outcome


async def test_fused_implicit_signals_teach_at_least_90_percent_of_the_true_rewards_ctr(service: object) -> None:
    """Budget: 60 users x 60 decisions per surface; expected CTR over the last 20 rounds. Both
    surfaces run Thompson sampling; `implicit_ts` never sees a rating and fuses click (0.5),
    dwell (0.5, saturating at 60 s), like (0.5) and skip (-0.5)."""
    async with AsyncClient(service.target, default_timeout=10) as client:  # type: ignore[attr-defined]
        outcome = await scenarios.implicit_vs_true(client, "true_ts", "implicit_ts")
    print(outcome, outcome.ratio)
    assert outcome.ratio >= 0.90, outcome
    assert outcome.implicit.lift >= 1.30, outcome  # and it learned: not two equally poor policies
