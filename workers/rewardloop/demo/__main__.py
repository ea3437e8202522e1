"""`make demo`: simulated users learn to click through the running stack.

Without --target, starts its own stack (embedded Redis, local Ray, the service on a
free 127.0.0.1 port); with --target, drives a service that is already running (e.g.
`make run` in another terminal), using fresh user ids each time. Prints the learned
policy's CTR next to a uniform-random policy on the same simulated users, and writes the
learning curve as an SVG.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid
from pathlib import Path

from tqdm import tqdm

from rewardloop.client import AsyncClient
from rewardloop.demo.drive import RunResult, random_policy_ctr, run_population
from rewardloop.simulator.population import Population


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rewardloop-demo", description=__doc__)
    parser.add_argument("--target", help="host:port of a running service (default: start one)")
    parser.add_argument("--surface", default="home_feed", help="surface to drive (default config: home_feed)")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=100, help="decisions per user")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--svg", default="var/demo-learning-curve.svg")
    return parser.parse_args()


async def drive(target: str, args: argparse.Namespace, population: Population) -> RunResult:
    prefix = f"demo-{uuid.uuid4().hex[:6]}-"
    bar = tqdm(total=args.rounds, desc=f"{args.surface}", unit="round")

    def on_round(round_: int, result: RunResult) -> None:
        bar.update(1)
        bar.set_postfix(ctr=f"{result.ctr(max(0, round_ - 4)):.3f}")

    async with AsyncClient(target, default_timeout=10) as client:
        result = await run_population(
            client,
            population,
            args.surface,
            args.rounds,
            seed=args.seed,
            user_prefix=prefix,
            on_round=on_round,
        )
    bar.close()
    return result


async def main_async(args: argparse.Namespace) -> None:
    population = Population(n_users=args.users, n_items=30, seed=args.seed, taste_strength=2.0, base_ctr=0.03)
    started = time.perf_counter()
    if args.target:
        result = await drive(args.target, args, population)
    else:
        result = await _with_own_stack(args, population)
    elapsed = time.perf_counter() - started
    random = random_policy_ctr(population, list(range(args.users)), args.rounds, seed=args.seed)
    tail = max(1, args.rounds // 4)
    learned = result.ctr(args.rounds - tail)
    decisions = args.users * args.rounds
    print(f"\n{decisions:,} decisions + {decisions:,} feedback events in {elapsed:.1f} s")
    print(f"  uniform random CTR           {random:.3f}")
    print(f"  learned CTR, whole run       {result.ctr():.3f}  ({result.ctr() / random:.2f}x random)")
    print(f"  learned CTR, last {tail} rounds  {learned:.3f}  ({learned / random:.2f}x random)")
    print(f"  oracle CTR (best item/user)  {population.oracle_ctr():.3f}")
    write_svg(Path(args.svg), result, random, population.oracle_ctr())
    print(f"learning curve: {args.svg}")


async def _with_own_stack(args: argparse.Namespace, population: Population) -> RunResult:
    import ray

    from rewardloop.server.app import Service
    from rewardloop.workers.cluster import serve_at_full_priority
    from rewardloop.workers.config import ServiceConfig
    from rewardloop.workers.redis_server import EmbeddedRedis

    with EmbeddedRedis() as redis_server:
        serve_at_full_priority()
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        service = await Service(ServiceConfig.load(), redis_server.url, "127.0.0.1:0").start()
        try:
            return await drive(service.target, args, population)
        finally:
            await service.stop(grace=1.0)
            ray.shutdown()


def write_svg(path: Path, result: RunResult, random: float, oracle: float) -> None:
    """A dependency-free learning curve: per-round CTR against random and oracle."""
    width, height, pad = 640, 320, 40
    ctrs = [c / result.users for c in result.clicks_per_round]
    top = max([oracle, *ctrs]) * 1.1

    def x(i: float) -> float:
        return pad + i * (width - 2 * pad) / max(1, len(ctrs) - 1)

    def y(v: float) -> float:
        return height - pad - v * (height - 2 * pad) / top

    curve = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(ctrs))
    lines = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<polyline points="{curve}" fill="none" stroke="#1f77b4" stroke-width="2"/>',
        f'<line x1="{pad}" x2="{width - pad}" y1="{y(random):.1f}" y2="{y(random):.1f}" stroke="#d62728" '
        'stroke-dasharray="6 4"/>',
        f'<line x1="{pad}" x2="{width - pad}" y1="{y(oracle):.1f}" y2="{y(oracle):.1f}" stroke="#2ca02c" '
        'stroke-dasharray="2 4"/>',
        f'<text x="{pad}" y="20" font-size="14">CTR per round (blue) vs uniform random (red, {random:.3f}) '
        f"and oracle (green, {oracle:.3f})</text>",
        f'<text x="{width / 2}" y="{height - 8}" font-size="12" text-anchor="middle">round</text>',
        "</svg>",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main() -> None:
    asyncio.run(main_async(parse_args()))


if __name__ == "__main__":
    main()
