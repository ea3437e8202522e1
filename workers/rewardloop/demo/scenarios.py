"""Learning scenarios run against a live service: shared by the acceptance tests (which
assert on the numbers) and `bench/learning.py` (which prints them for more seeds).

Each scenario takes an SDK client and a `refresh` coroutine (publishing and merging the
shards' population statistics now, instead of waiting for their 1 s timer) and returns the
measured figures; all randomness is seeded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from rewardloop.client import AsyncClient
from rewardloop.demo.drive import click_only, implicit_signals, random_policy_ctr, run_population
from rewardloop.simulator.population import Population

Refresh = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Outcome:
    """CTRs over a scenario's measurement window (expected: from the simulator's truth)."""

    learned: float
    random: float
    oracle: float

    @property
    def lift(self) -> float:
        return self.learned / self.random

    @property
    def oracle_ratio(self) -> float:
        return self.learned / self.oracle


async def context_free(
    client: AsyncClient,
    surface: str,
    *,
    users: int = 60,
    rounds: int = 80,
    tail: int = 30,
    seed: int = 3,
    prefix: str = "",
) -> Outcome:
    """Per-user bandits on a 10-item catalogue; realised CTR of the last `tail` rounds."""
    population = Population(n_users=users, n_items=10, seed=seed, taste_strength=2.0, base_ctr=0.03)
    run = await run_population(client, population, surface, rounds, seed=seed + 2, user_prefix=prefix or f"{surface}-")
    return Outcome(
        learned=run.ctr(rounds - tail),
        random=random_policy_ctr(population, list(range(users)), rounds, seed=seed + 2),
        oracle=run.oracle_ctr(rounds - tail),
    )


@dataclass(frozen=True)
class ImplicitOutcome:
    true_reward: Outcome  # the policy taught by clicks, the true reward
    implicit: Outcome  # the same policy taught by fused implicit signals only

    @property
    def ratio(self) -> float:
        return self.implicit.learned / self.true_reward.learned


async def implicit_vs_true(
    client: AsyncClient, true_surface: str, implicit_surface: str, *, users: int = 60, rounds: int = 60,
    tail: int = 20, seed: int = 3, prefix: str = "",
) -> ImplicitOutcome:  # fmt: skip
    """One population taught twice: with the click (the true reward) and with fused implicit signals
    (impression, click, dwell, like, skip; no ratings); expected CTR of the last `tail` rounds."""
    population = Population(n_users=users, n_items=10, seed=seed, taste_strength=2.0, base_ctr=0.03)
    outcomes = []
    for surface, report in ((true_surface, click_only), (implicit_surface, implicit_signals)):
        run = await run_population(
            client, population, surface, rounds, seed=seed + 2, user_prefix=f"{prefix or surface}-", report=report
        )
        first = rounds - tail
        outcomes.append(Outcome(run.expected_ctr(first), run.random_ctr(first), run.oracle_ctr(first)))
    return ImplicitOutcome(*outcomes)


async def contextual(
    client: AsyncClient, surface: str, refresh: Refresh, *, users: int = 150, rounds: int = 30, tail: int = 10,
    seed: int = 1, prefix: str = "",
) -> Outcome:  # fmt: skip
    """A contextual surface fed the users' observable features and a request context."""
    population = Population(n_users=users, n_items=10, seed=seed, taste_dim=4, taste_strength=2.0, base_ctr=0.03)
    run = await run_population(
        client, population, surface, rounds, seed=seed + 4, user_prefix=prefix or f"{surface}-", contextual=True,
        between_rounds=refresh,
    )  # fmt: skip
    first = rounds - tail
    return Outcome(run.expected_ctr(first), run.random_ctr(first), run.oracle_ctr(first))


@dataclass(frozen=True)
class ColdStartOutcome:
    first_request: Outcome  # newcomers' first decision
    population_alone: float  # divergent newcomers' first decision: no evidence of their own
    after_three: float  # the same users' decisions 4 to 6
    divergent_users: int
    population_pick: int  # the item the population model serves a newcomer


async def cold_start(
    client: AsyncClient, surface: str, refresh: Refresh, *, seed: int = 1, veteran_rounds: int = 15, prefix: str = ""
) -> ColdStartOutcome:
    """Veterans teach the population; newcomers arrive; those unlike the population personalise.

    *Unlike the population* means the population model serves them badly: their click probability
    on the item it serves a newcomer (the one newcomers are shown most at arrival) is at most half
    of their best item's. Those are the users personalisation must rescue; a newcomer whose best
    item is what the population model serves anyway has nothing to gain from it. (The population's
    *true* best item is the wrong yardstick: the prior is learned from veterans who were already
    being personalised, so on some seeds it ranks a near-tied item first, and "divergent" users
    measured against the true best are then served their own best item from the first request.)
    """
    prefix = prefix or f"{surface}-"
    population = Population(n_users=400, n_items=10, seed=seed, taste_dim=4, taste_strength=2.0, base_ctr=0.03)
    veterans, newcomers = list(range(200)), list(range(200, 400))
    probabilities = np.array([population.click_probabilities(u) for u in range(400)])
    await run_population(
        client, population, surface, veteran_rounds, users=veterans, seed=seed + 2, user_prefix=prefix,
        between_rounds=refresh,
    )  # fmt: skip
    arrivals = await run_population(client, population, surface, 1, users=newcomers, seed=seed + 3, user_prefix=prefix)
    population_pick = int(np.bincount(arrivals.shown_per_round[0], minlength=population.n_items).argmax())
    divergent = [u for u in newcomers if probabilities[u, population_pick] <= 0.5 * probabilities[u].max()]
    personal = await run_population(
        client, population, surface, 6, users=divergent, seed=seed + 3, user_prefix=f"{prefix}div-",
        between_rounds=refresh,
    )  # fmt: skip
    return ColdStartOutcome(
        first_request=Outcome(arrivals.expected_ctr(), arrivals.random_ctr(), arrivals.oracle_ctr()),
        population_alone=personal.expected_ctr(0, 1),
        after_three=personal.expected_ctr(3, 6),
        divergent_users=len(divergent),
        population_pick=population_pick,
    )


async def drift(
    client: AsyncClient, surface: str, *, seed: int = 3, before_rounds: int = 300, after_rounds: int = 200,
    tail: int = 50, prefix: str = "",
) -> Outcome:  # fmt: skip
    """Tastes change after `before_rounds`; CTR against the *new* oracle over the last `tail` rounds,
    for the users whose best item changed (the ones drift matters to)."""
    before = Population(n_users=60, n_items=5, seed=seed, taste_dim=4, taste_strength=5.0, base_ctr=0.1)
    after = before.shifted(seed=99)
    changed = [u for u in range(60) if before.best_item(u) != after.best_item(u)]
    prefix = prefix or f"{surface}-"
    await run_population(client, before, surface, before_rounds, users=changed, seed=seed + 4, user_prefix=prefix)
    run = await run_population(
        client, after, surface, after_rounds, users=changed, seed=seed + 5, user_prefix=prefix,
        first_round=before_rounds,
    )  # fmt: skip
    first = after_rounds - tail
    return Outcome(run.expected_ctr(first), run.random_ctr(first), run.oracle_ctr(first))
