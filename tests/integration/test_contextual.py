"""Contextual policies through the real service: features in the request, pooled priors."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from rewardloop.client import AsyncClient
from rewardloop.demo import scenarios

pytestmark = pytest.mark.cluster


async def refresh_priors(service: object, round_: int = 0) -> None:
    """Every shard's prior holds everything learned so far: all publish (and merge what the others
    had published), then all merge again (a shard merging while another publishes misses it)."""
    for _ in range(2):
        await asyncio.gather(*(a.refresh_priors.remote() for a in service.actors))  # type: ignore[attr-defined]


async def refresh_and_fit(service: object, round_: int) -> None:
    """Publish and merge the priors; every 5th round also fit what the shards published and load it."""
    await refresh_priors(service)
    if round_ % 5 == 4:
        await service.fitter.fit_now.remote()  # type: ignore[attr-defined]
        await refresh_priors(service)


@pytest.mark.parametrize(
    ("surface", "refresh"),
    [
        # The prior strength set by hand (not the default any more): in `make test-all`.
        pytest.param("ctx_linucb", refresh_priors, marks=pytest.mark.slow),
        ("ctx_linucb_learned", refresh_and_fit),
        ("ctx_lints_learned", refresh_and_fit),
    ],
)
async def test_contextual_policy_nears_the_oracle(service: object, surface: str, refresh: Any) -> None:
    """Budget: 150 users x 30 decisions = 4,500 decisions, measured over the last 10 rounds.

    The share of the oracle varies with the order in which the service sees the requests (prior
    refreshes landing mid-round, summation order under another hash seed): for ctx_linucb (prior
    strength 50, set by hand) we measured 0.79 to 0.94 over runs (alone, under CPU load, inside the
    suite, PYTHONHASHSEED 0 or random), so the bound is 0.75, with random at ~0.25 of the oracle. The
    learned surfaces are the default configuration: their strength is estimated from their users
    (refitted every few rounds, as the service's fitter does every 30 s)."""
    rounds = itertools.count()
    async with AsyncClient(service.target, default_timeout=10) as client:  # type: ignore[attr-defined]
        outcome = await scenarios.contextual(client, surface, lambda: refresh(service, next(rounds)))
    print(f"{surface}: {outcome}")
    assert outcome.lift >= 1.5, outcome
    assert outcome.oracle_ratio >= 0.75, outcome
