"""Learning figures through the real service, over several seeds: lift over uniform random,
share of the oracle, cold start, drift recovery. The tests assert one seed of each; this prints
the spread.

    .venv/bin/python bench/learning.py --seeds 3
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time

import ray
from _workload import NO_BURST_LIMIT

from rewardloop.client import AsyncClient
from rewardloop.demo import scenarios
from rewardloop.server.app import Service
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.redis_server import EmbeddedRedis

ITEMS = [f"item-{i:03d}" for i in range(10)]
FEATURES = {"numeric": [f"u{k}" for k in range(6)] + ["c0", "c1"]}
# In units of x x^T (see learning/bandits/ridge.py): with |x|^2 ~ 9 here, about 22 observations' worth per arm.
LINEAR_PRIOR = 200.0
IMPLICIT_WEIGHTS = {
    "click": {"weight": 0.5}, "dwell": {"weight": 0.5, "scale": 60}, "like": {"weight": 0.5}, "skip": {"weight": -0.5},
}  # fmt: skip
SURFACES = {
    "ucb1": {"algorithm": "ucb1", "items": ITEMS},
    "thompson": {"algorithm": "thompson", "items": ITEMS},
    "epsilon_greedy": {"algorithm": "epsilon_greedy", "items": ITEMS},
    "linucb": {"algorithm": "linucb", "items": ITEMS, "features": FEATURES, "cold_start": {"strength": LINEAR_PRIOR}},
    "lin_ts": {"algorithm": "lin_ts", "items": ITEMS, "features": FEATURES, "cold_start": {"strength": LINEAR_PRIOR}},
    "linucb_no_prior": {
        "algorithm": "linucb", "items": ITEMS, "features": FEATURES, "cold_start": {"strength": 0.0},
    },
    "true_ts": {"algorithm": "thompson", "items": ITEMS},
    "implicit_ts": {"algorithm": "thompson", "items": ITEMS, "reward": {"signals": IMPLICIT_WEIGHTS}},
    "cold_ucb": {"algorithm": "ucb1", "params": {"c": 0.5}, "items": ITEMS, "cold_start": {"strength": 2.0}},
    "discounted_thompson": {"algorithm": "discounted_thompson", "params": {"gamma": 0.99}, "items": ITEMS[:5]},
    "thompson_stationary": {"algorithm": "thompson", "items": ITEMS[:5], "cold_start": {"strength": 0.0}},
}  # fmt: skip


def surfaces_for(seeds: list[int]) -> dict[str, dict[str, object]]:
    """A fresh copy of every surface per seed: a surface's population prior keeps learning across
    runs, and a population of another seed (other items, other tastes) must not be its prior."""
    return {f"{name}-s{seed}": spec for seed in seeds for name, spec in SURFACES.items()}


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


async def main_async(seeds: list[int], parts: list[str]) -> None:
    service = {"shards": 2, "seed": 1, "quality": NO_BURST_LIMIT}
    config = ServiceConfig.from_dict({"service": service, "surfaces": surfaces_for(seeds)})
    with EmbeddedRedis() as redis_server:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        service = await Service(config, redis_server.url, "127.0.0.1:0").start()

        async def refresh() -> None:
            await asyncio.gather(*(a.refresh_priors.remote() for a in service.actors))

        try:
            async with AsyncClient(service.target, default_timeout=30) as client:
                await report(client, refresh, seeds, parts)
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


PARTS = {
    "context_free": context_free,
    "implicit": implicit,
    "contextual": contextual,
    "cold_start": cold_start,
    "drift": drift,
}


async def report(client: AsyncClient, refresh: scenarios.Refresh, seeds: list[int], parts: list[str]) -> None:
    started = time.perf_counter()
    print(f"seeds {seeds}; every figure is the mean over seeds (min, max)")
    for part in parts:
        print()
        await PARTS[part](client, refresh, seeds)
    print(f"\n({time.perf_counter() - started:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds (1, 2, ...)")
    parser.add_argument("--only", choices=sorted(PARTS), action="append", help="run this part (repeatable)")
    args = parser.parse_args()
    asyncio.run(main_async(list(range(1, args.seeds + 1)), args.only or list(PARTS)))


if __name__ == "__main__":
    main()
