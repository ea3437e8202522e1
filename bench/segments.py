"""What learned segments cost: fitting, and Recommend with segment priors next to without, same run.

1. Fitting (``fit_segments_and_mixture``: the segments and the prior mixture, as the fitter does) on
   sampled users of catalogues of several sizes: seconds per fit (the fitter actor spends at most
   ``MAX_DUTY`` of a core on it).
2. In-process: the shard's decision (``Bandit.decide_now``) for users with 5-40 plays each, from the
   population prior (segments off) and from their segment prior, with the membership cached (the
   user's next request before new feedback) and recomputed (every request after feedback).
3. Through gRPC: sequential Recommend latency on two surfaces of the same catalogue, one with
   segments, one without, after veterans taught both and the fitter fitted the first; requests to the
   two alternate, so both see the same machine.

    .venv/bin/python bench/segments.py                    # ~2 min
    .venv/bin/python bench/segments.py --calls 5000 --items 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Sequence

import numpy as np
from _cli import run_main, start_ray

from rewardloop.client import AsyncClient
from rewardloop.demo.drive import run_population
from rewardloop.learning.bandits import make_policy
from rewardloop.learning.segments import fit_segments_and_mixture
from rewardloop.learning.segments.versions import encode, next_version
from rewardloop.server.app import Service
from rewardloop.simulator import Population
from rewardloop.state.priors import Priors
from rewardloop.state.user_state import UserState, new_user_state
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.kinds import Bandit
from rewardloop.workers.messages import RecommendCall
from rewardloop.workers.redis_server import EmbeddedRedis
from rewardloop.workers.segments import MAX_DUTY

TARGET_RATIO = 1.3
NO_BURST_LIMIT = {"burst_per_second": 1_000_000, "burst_per_minute": 1_000_000}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="timed decisions per variant")
    parser.add_argument("--items", type=int, default=30, help="catalogue of the in-process and gRPC parts")
    parser.add_argument("--skip-grpc", action="store_true", help="only the fitting and in-process parts")
    return parser.parse_args(argv)


def population(users: int, items: int, seed: int = 1) -> Population:
    return Population(n_users=users, n_items=items, n_segments=4, taste_strength=2.5, base_ctr=0.05, seed=seed)


def evidence(pop: Population, plays_per_user: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniformly random plays of each user, and their clicks."""
    rng = np.random.default_rng(seed)
    p = pop.click_matrix()
    plays = rng.multinomial(plays_per_user, np.full(pop.n_items, 1.0 / pop.n_items), size=pop.n_users)
    return plays.astype(float), rng.binomial(plays, p).astype(float)


def fitting() -> None:
    print(f"1. fitting segments (the fitter spends at most {MAX_DUTY:.0%} of a core on it)")
    print(f"  {'users':>6} {'items':>6} {'plays/user':>10} {'segments':>9} {'mixture':>8} {'seconds':>8}")
    for users, items, plays in ((1000, 30, 30), (4000, 30, 30), (4000, 200, 30), (4000, 1000, 30)):
        n, x = evidence(population(users, items), plays, seed=0)
        started = time.perf_counter()
        fitted = fit_segments_and_mixture(n, x, seed=0)  # what the fitter runs
        elapsed = time.perf_counter() - started
        k = fitted[0].k if fitted else 0
        mixture = fitted[1].k if fitted and fitted[1] else k
        print(f"  {users:>6} {items:>6} {plays:>10} {k:>9} {mixture:>8} {elapsed:>8.2f}", flush=True)


def deciders(items: int) -> tuple[dict[str, Bandit], list[UserState]]:
    """The shard's deciders of two surfaces of one catalogue, "with" segments (a fitted model loaded)
    and "without", over one population prior; 500 users with 5-40 plays each on both."""
    pop = population(2000, items)
    n, x = evidence(pop, 30, seed=2)
    spec = {"algorithm": "thompson", "items": list(pop.item_ids)}
    config = ServiceConfig.from_dict(
        {"surfaces": {"with": spec, "without": {**spec, "cold_start": {"segments": False}}}}
    )
    policies = {name: make_policy(s.policy_config, len(s.items)) for name, s in config.surfaces.items()}
    priors = Priors(config.surfaces, policies, 0, 1)
    for name in policies:  # the population prior both start from
        for u, arm in zip(*np.nonzero(n[:200]), strict=True):
            priors.learn(name, "", int(arm), float(x[u, arm] / n[u, arm]), None, None)
        priors._recompute(name, [])
    fitted = fit_segments_and_mixture(n, x, seed=0)
    assert fitted is not None
    priors.learned._load("with", encode(next_version(None, fitted[0], 0, fitted[1])))
    rng = np.random.default_rng(3)
    clicks = pop.click_matrix()
    users = []
    for u in range(500):
        user = new_user_state(f"{u:032x}", policies, seed=0)
        for arm in rng.integers(0, items, size=int(rng.integers(5, 41))):
            reward = float(rng.random() < clicks[u, arm])
            for name, policy in policies.items():
                policy.update(user.policies[name], int(arm), reward)
        users.append(user)
    return {name: Bandit(config.surfaces[name], policies[name], priors) for name in policies}, users


def in_process(items: int, calls: int) -> None:
    print(f"\n2. in-process decisions, thompson, {items} items, n=10: microseconds per Recommend (median of 5 runs)")
    kinds, users = deciders(items)

    def timed(name: str, fresh: bool) -> float:
        """Microseconds per decision over ``calls`` decisions."""
        started = time.perf_counter()
        for i in range(calls):
            user = users[i % len(users)]
            if fresh:
                user.memberships.clear()
            kinds[name].decide_now(RecommendCall(user.pseudonym, name, 10), user, 0)
        return (time.perf_counter() - started) / calls * 1e6

    # The three in turn, five times: a slower moment of the machine weighs on all of them.
    variants = {"base": ("without", False), "cached": ("with", False), "fresh": ("with", True)}
    runs: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(5):
        for variant, (name, fresh) in variants.items():
            runs[variant].append(timed(name, fresh))
    base, cached, fresh = (statistics.median(runs[v]) for v in variants)
    print(f"  population prior (segments off)        {base:8.1f}")
    print(f"  segment prior, membership cached       {cached:8.1f}  {cached / base:.2f}x")
    print(f"  segment prior, membership recomputed   {fresh:8.1f}  {fresh / base:.2f}x  (target <= {TARGET_RATIO}x)")


async def through_grpc(items: int, calls: int) -> None:
    print(f"\n3. through gRPC (2 shards, local Ray, embedded Redis), thompson, {items} items, n=10, sequential")
    pop = population(200, items)
    surface = {"algorithm": "thompson", "items": list(pop.item_ids)}
    config = ServiceConfig.from_dict(
        {
            "service": {"shards": 2, "quality": NO_BURST_LIMIT},
            "surfaces": {"with": surface, "without": {**surface, "cold_start": {"segments": False}}},
        }
    )
    async with contextlib.AsyncExitStack() as stack:
        redis_server = stack.enter_context(EmbeddedRedis())
        start_ray(stack)
        service = await Service(config, redis_server.url, "127.0.0.1:0", shard_prefix="bench-segments").start()
        stack.push_async_callback(service.stop, 1.0, False)

        async def refresh() -> None:
            await asyncio.gather(*(a.refresh_priors.remote() for a in service.actors))

        client = await stack.enter_async_context(AsyncClient(service.target, default_timeout=30))
        for name in ("with", "without"):
            await run_population(client, pop, name, 20, seed=1, user_prefix="v-", between_rounds=refresh)
        await refresh()
        versions = await service.fitter.fit_now.remote()
        await refresh()
        print(f"  segment model: version {versions.get('with')}")
        latencies: dict[str, list[float]] = {"with": [], "without": []}
        for i in range(calls):
            for name in ("with", "without"):
                user = f"v-{pop.user_ids[i % pop.n_users]}"
                started = time.perf_counter()
                await client.recommend(user, name, n=10)
                latencies[name].append((time.perf_counter() - started) * 1e3)
        base = statistics.median(latencies["without"])
        for name, label in (("without", "segments off"), ("with", "segment prior")):
            values = np.array(latencies[name])
            p50, p99 = float(np.median(values)), float(np.percentile(values, 99))
            print(f"  {label:<15} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  p50 {p50 / base:.2f}x")


async def main_async(args: argparse.Namespace) -> None:
    fitting()
    in_process(args.items, args.calls)
    if not args.skip_grpc:
        await through_grpc(args.items, args.calls)


if __name__ == "__main__":
    arguments = parse_args()
    run_main(lambda: main_async(arguments))
