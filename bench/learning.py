"""Learning figures through the real service, over several seeds: lift over uniform random,
share of the oracle, cold start, drift recovery, and the population families of issue 11. The
tests assert one seed of each; this prints the spread.

    .venv/bin/python bench/learning.py --seeds 3
    .venv/bin/python bench/learning.py --seeds 5 --only families       # ~30-40 min: 5 families x 3 algorithms
    .venv/bin/python bench/learning.py --seeds 2 --only families --family latent_groups
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import logging
import statistics
import time
from collections.abc import Awaitable, Callable

import numpy as np
import ray
from _workload import NO_BURST_LIMIT

from rewardloop.client import AsyncClient
from rewardloop.demo import scenarios
from rewardloop.demo.drive import run_population
from rewardloop.server.app import Service
from rewardloop.simulator.families import FAMILIES, group_bound
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.redis_server import EmbeddedRedis

ITEMS = [f"item-{i:03d}" for i in range(10)]
FEATURES = {"numeric": [f"u{k}" for k in range(6)] + ["c0", "c1"]}
IMPLICIT_WEIGHTS = {
    "click": {"weight": 0.5}, "dwell": {"weight": 0.5, "scale": 60}, "like": {"weight": 0.5}, "skip": {"weight": -0.5},
}  # fmt: skip
SURFACES = {
    "ucb1": {"algorithm": "ucb1", "items": ITEMS},
    "thompson": {"algorithm": "thompson", "items": ITEMS},
    "epsilon_greedy": {"algorithm": "epsilon_greedy", "items": ITEMS},
    # Linear priors at the strength learned from the users (learning/segments/linear_prior.py).
    "linucb": {"algorithm": "linucb", "items": ITEMS, "features": FEATURES},
    "lin_ts": {"algorithm": "lin_ts", "items": ITEMS, "features": FEATURES},
    "linucb_no_prior": {
        "algorithm": "linucb", "items": ITEMS, "features": FEATURES, "cold_start": {"strength": 0.0},
    },
    "true_ts": {"algorithm": "thompson", "items": ITEMS},
    "implicit_ts": {"algorithm": "thompson", "items": ITEMS, "reward": {"signals": IMPLICIT_WEIGHTS}},
    "cold_ucb": {"algorithm": "ucb1", "params": {"c": 0.5}, "items": ITEMS, "cold_start": {"strength": 2.0}},
    "discounted_thompson": {"algorithm": "discounted_thompson", "params": {"gamma": 0.99}, "items": ITEMS[:5]},
    "thompson_stationary": {"algorithm": "thompson", "items": ITEMS[:5], "cold_start": {"strength": 0.0}},
}  # fmt: skip


# The context-free algorithms of the default config, each with its default hyper-parameters and prior,
# and the contextual ones, fed the users' observable features and each request's context (every
# family's clicks depend on the context: `Population.context_strength`).
FAMILY_ALGORITHMS = ("thompson", "ucb1", "epsilon_greedy")
CONTEXTUAL_ALGORITHMS = ("lin_ts", "linucb")
NEWCOMER_SHARE = 0.25
NEWCOMER_REQUESTS = 6
REFIT_ROUNDS = 5


def surfaces_for(seeds: list[int], families: list[str], algorithms: list[str]) -> dict[str, dict[str, object]]:
    """A fresh copy of every surface per seed: a surface's population prior keeps learning across
    runs, and a population of another seed (other items, other tastes) must not be its prior."""
    surfaces = {f"{name}-s{seed}": spec for seed in seeds for name, spec in SURFACES.items()}
    for family in families:
        population = FAMILIES[family].population(0)
        features = {"numeric": [*population.user_feature_names, *population.context_names]}
        for algorithm in algorithms:
            spec: dict[str, object] = {"algorithm": algorithm, "items": list(population.item_ids)}
            if algorithm in CONTEXTUAL_ALGORITHMS:
                spec["features"] = features
            for seed in seeds:
                surfaces[f"{family}-{algorithm}-s{seed}"] = spec
    return surfaces


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


async def main_async(
    seeds: list[int], parts: list[str], family_names: list[str], algorithms: list[str], fit_every: int | None = None
) -> None:
    # Segments are refitted every REFIT_ROUNDS rounds (the service's fitter runs every 30 s; here
    # rounds take a second or two, and the outcome must not depend on when a fit lands). With
    # ``fit_every``, the fitter's own timer fits instead, as for a caller driving the service at speed.
    service = {"shards": 2, "seed": 1, "quality": NO_BURST_LIMIT, "segment_fit_seconds": fit_every or 0}
    chosen = family_names if "families" in parts else []
    config = ServiceConfig.from_dict({"service": service, "surfaces": surfaces_for(seeds, chosen, algorithms)})
    runners = [
        functools.partial(families, chosen=chosen, algorithms=algorithms) if part == "families" else PARTS[part]
        for part in parts
    ]
    with EmbeddedRedis() as redis_server:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        service = await Service(config, redis_server.url, "127.0.0.1:0").start()

        rounds = itertools.count()

        async def refresh() -> None:
            await asyncio.gather(*(a.refresh_priors.remote() for a in service.actors))
            if fit_every is None and next(rounds) % REFIT_ROUNDS == 0:  # the samples just published are fitted
                await service.fitter.fit_now.remote()
                await asyncio.gather(*(a.refresh_priors.remote() for a in service.actors))

        try:
            async with AsyncClient(service.target, default_timeout=30) as client:
                await report(client, refresh, seeds, runners)
        finally:
            await service.stop(grace=1.0)
            ray.shutdown()


async def context_free(client: AsyncClient, refresh: scenarios.Refresh, seeds: list[int]) -> None:
    print("context-free, 10 items, 60 users x 80 decisions, realised CTR of the last 30 rounds (target: lift >= 1.30)")
    for surface in ("ucb1", "thompson", "epsilon_greedy"):
        runs = [await scenarios.context_free(client, f"{surface}-s{s}", seed=s) for s in seeds]
        print(f"  {surface:<16} lift over random {spread([r.lift for r in runs])}")


async def contextual(client: AsyncClient, refresh: scenarios.Refresh, seeds: list[int]) -> None:
    print("contextual, 10 items, 150 users x 30 decisions, expected CTR of the last 10 rounds")
    print("  (targets: lift >= 1.5, share of the oracle >= 0.85; 'no prior' = per-user model only)")
    for surface in ("linucb", "lin_ts", "linucb_no_prior"):
        runs = [await scenarios.contextual(client, f"{surface}-s{s}", refresh, seed=s) for s in seeds]
        print(
            f"  {surface:<16} lift {spread([r.lift for r in runs])}, "
            f"oracle share {spread([r.oracle_ratio for r in runs])}, "
            f"regret/decision {spread([r.oracle - r.learned for r in runs])}"
        )


async def cold_start(client: AsyncClient, refresh: scenarios.Refresh, seeds: list[int]) -> None:
    print("cold start, ucb1 c=0.5 with a population prior of 2 pseudo-observations")
    cold = [await scenarios.cold_start(client, f"cold_ucb-s{s}", refresh, seed=s) for s in seeds]
    print(f"  newcomers' first request: lift over random {spread([c.first_request.lift for c in cold])}")
    print(
        "  users unlike the population (CTR on the item it serves them <= half their best; "
        f"{spread([float(c.divergent_users) for c in cold])} users):"
    )
    print(
        f"    decisions 4-6 vs the population model alone {spread([c.after_three / c.population_alone for c in cold])}x"
    )


async def drift(client: AsyncClient, refresh: scenarios.Refresh, seeds: list[int]) -> None:
    print("drift, 5 items, tastes re-drawn after 300 decisions/user; last 50 of 200 after (target: >= 0.90)")
    for surface in ("discounted_thompson", "thompson_stationary"):
        runs = [await scenarios.drift(client, f"{surface}-s{s}", seed=s) for s in seeds]
        print(f"  {surface:<20} share of the new oracle {spread([r.oracle_ratio for r in runs])}")


async def implicit(client: AsyncClient, refresh: scenarios.Refresh, seeds: list[int]) -> None:
    print("implicit signals (no ratings) vs the true reward (click), Thompson, 60 users x 60 decisions, last 20 rounds")
    print("  (target: implicit CTR >= 0.90 of the true reward's)")
    runs = [await scenarios.implicit_vs_true(client, f"true_ts-s{s}", f"implicit_ts-s{s}", seed=s) for s in seeds]
    print(f"  implicit / true CTR {spread([r.ratio for r in runs])}")
    true, fused = spread([r.true_reward.lift for r in runs]), spread([r.implicit.lift for r in runs])
    print(f"  lift over random: true {true}, implicit {fused}")


async def families(
    client: AsyncClient, refresh: scenarios.Refresh, seeds: list[int], chosen: list[str], algorithms: list[str]
) -> None:
    """Veterans (3/4 of each population) make every request, round by round, with the priors refreshed
    between rounds; then newcomers arrive at the prior the veterans taught. Expected CTR (the shown
    item's true click probability) against uniform random, the population's single best item and
    the bound of a policy that knows the true taste groups (issue 11's bars: >= 1.5x random and
    >= 1.1x the best item; newcomers >= 0.95x the best item at request 1 and half the bound's gain
    at requests 4-6). The veterans' best item is the one that would have done best at their requests
    (under their contexts, for the contextual algorithms); the newcomers' is the veterans' best item
    under the same tastes (after any shift), served to the newcomers. The bound is averaged over the
    newcomers; it knows the groups, not the context."""
    print("population families through the service, default hyper-parameters and priors (thompson: learned segments)")
    header = f"  {'family':<17} {'algorithm':<15} {'x random':>13} {'x best item':>13} {'new@1 x best':>13}"
    print(f"{header} {'new@4-6 x best':>15} {'bound@4-6':>10}")
    for family in chosen:
        for algorithm in algorithms:
            figures = []
            for seed in seeds:
                spec = FAMILIES[family]
                population = spec.population(seed)
                # Veterans meet `later` from request `shift_at` on; newcomers arrive after any taste shift.
                shift_at, later = spec.drift(seed) or (spec.requests, population)
                surface = f"{family}-{algorithm}-s{seed}"
                n_new = round(population.n_users * NEWCOMER_SHARE)
                veterans = list(range(population.n_users - n_new))
                newcomers = list(range(population.n_users - n_new, population.n_users))
                contextual = algorithm in CONTEXTUAL_ALGORITHMS
                common = dict(
                    users=veterans, seed=seed, user_prefix=f"{surface}-", between_rounds=refresh, contextual=contextual
                )
                old = await run_population(client, population, surface, shift_at, **common)
                if shift_at < spec.requests:
                    rest = spec.requests - shift_at
                    old = old.followed_by(
                        await run_population(client, later, surface, rest, first_round=shift_at, **common)
                    )
                new = await run_population(
                    client, later, surface, NEWCOMER_REQUESTS, users=newcomers, seed=seed,
                    user_prefix=f"{surface}-", between_rounds=refresh, contextual=contextual,
                )  # fmt: skip
                # Newcomers against the population's best item (the veterans' under the same
                # tastes) served to them, and the bound over them, not the newcomers' own best item
                # in hindsight: that maximum over ~40 users' noisy means was ~10% above it.
                best = old.best_item_ctr()
                best_new = new.item_ctr(old.best_item(shift_at if shift_at < spec.requests else 0))
                bound = group_bound(later, NEWCOMER_REQUESTS, seed, users=np.array(newcomers))
                figures.append(
                    (old.expected_ctr() / old.random_ctr(), old.expected_ctr() / best,
                     new.expected_ctr(0, 1) / best_new, new.expected_ctr(3, 6) / best_new,
                     sum(bound[3:6]) / 3 / best_new)
                )  # fmt: skip
            columns = list(zip(*figures, strict=True))
            cells = " ".join(f"{spread_short(list(c)):>13}" for c in columns[:3])
            print(f"  {family:<17} {algorithm:<15} {cells} {spread_short(list(columns[3])):>15} "
                  f"{sum(columns[4]) / len(seeds):>10.2f}", flush=True)  # fmt: skip


def spread_short(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ({min(values):.2f})"


Part = Callable[[AsyncClient, scenarios.Refresh, list[int]], Awaitable[None]]
PARTS: dict[str, Callable[..., Awaitable[None]]] = {
    "context_free": context_free,
    "implicit": implicit,
    "contextual": contextual,
    "cold_start": cold_start,
    "drift": drift,
    "families": families,
}
DEFAULT_PARTS = [part for part in PARTS if part != "families"]


async def report(client: AsyncClient, refresh: scenarios.Refresh, seeds: list[int], runners: list[Part]) -> None:
    started = time.perf_counter()
    print(f"seeds {seeds}; every figure is the mean over seeds (min, max)")
    for run in runners:
        print()
        await run(client, refresh, seeds)
    print(f"\n({time.perf_counter() - started:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds (1, 2, ...)")
    parser.add_argument(
        "--only", choices=sorted(PARTS), action="append", help="run this part (repeatable; families only when named)"
    )
    parser.add_argument("--family", choices=sorted(FAMILIES), action="append", help="families part: only this one")
    parser.add_argument(
        "--algorithm",
        choices=FAMILY_ALGORITHMS + CONTEXTUAL_ALGORITHMS,
        action="append",
        help="families part: only this algorithm (repeatable)",
    )
    parser.add_argument(
        "--fit-every",
        type=int,
        metavar="SECONDS",
        help="segments fitted by the fitter's timer at this service.segment_fit_seconds (default 30), "
        f"not every {REFIT_ROUNDS} rounds",
    )
    args = parser.parse_args()
    parts = args.only or DEFAULT_PARTS
    algorithms = args.algorithm or list(FAMILY_ALGORITHMS + CONTEXTUAL_ALGORITHMS)
    chosen = args.family or list(FAMILIES)
    asyncio.run(main_async(list(range(1, args.seeds + 1)), parts, chosen, algorithms, args.fit_every))


if __name__ == "__main__":
    main()
