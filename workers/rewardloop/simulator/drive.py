"""Drive a running rewardloop service with a simulated population, through the SDK.

Each round, every user (concurrently, up to `concurrency` in flight) asks for one
recommendation, reacts to it as the population's model says, and reports a click (1 or
0) for the item it was shown. The same users' uniform-random baseline is simulated
with the same response model, so both CTRs are comparable.

    python -m rewardloop.simulator.drive --target localhost:50051 --surface home_feed
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rewardloop.client import AsyncClient, Signal
from rewardloop.simulator.population import Population


@dataclass
class RunResult:
    """Clicks per round (summed over users) of a run; CTR helpers over round windows."""

    users: int
    clicks_per_round: list[int] = field(default_factory=list)
    acknowledged_events: int = 0

    def ctr(self, first_round: int = 0, last_round: int | None = None) -> float:
        rounds = self.clicks_per_round[first_round:last_round]
        return sum(rounds) / (len(rounds) * self.users) if rounds else 0.0


def random_policy_ctr(population: Population, users: list[int], rounds: int, seed: int) -> float:
    """CTR of uniform-random recommendations to the same users under the same model."""
    rng = np.random.default_rng(seed)
    clicks = 0
    for _ in range(rounds):
        for u in users:
            item = int(rng.integers(population.n_items))
            clicks += population.respond(u, item, rng).clicked
    return clicks / (rounds * len(users))


async def run_population(
    client: AsyncClient,
    population: Population,
    surface: str,
    rounds: int,
    *,
    users: list[int] | None = None,
    seed: int = 0,
    concurrency: int = 32,
    user_prefix: str = "",
    on_round: Callable[[int, RunResult], None] | None = None,
) -> RunResult:
    """Run `rounds` decision rounds for `users` (default: everyone) against `surface`."""
    users = list(range(population.n_users)) if users is None else users
    result = RunResult(users=len(users))
    rngs = {u: np.random.default_rng([seed, u]) for u in users}
    gate = asyncio.Semaphore(concurrency)

    async def one_decision(u: int, round_: int) -> int:
        user_id = f"{user_prefix}{population.user_ids[u]}"
        async with gate:
            rec = await client.recommend(user_id, surface)
            item_id = rec.items[0].item_id
            response = population.respond(u, population.item_index(item_id), rngs[u])
            await client.record(
                user_id,
                item_id,
                Signal.CLICK,
                1.0 if response.clicked else 0.0,
                decision_id=rec.decision_id,
                surface=surface,
                event_id=f"{user_id}:{surface}:{round_}",
            )
        return int(response.clicked)

    for round_ in range(rounds):
        clicks = await asyncio.gather(*(one_decision(u, round_) for u in users))
        result.clicks_per_round.append(sum(clicks))
        result.acknowledged_events += len(users)
        if on_round is not None:
            on_round(round_, result)
    return result
