"""What a Recommend + Record pair costs a shard's CPU, in-process: ``ShardCore`` on a real embedded
Redis (AOF, ``appendfsync always``), no gRPC, no channel, no Ray, so that a change to the shard's own
code shows without the soak's noise. It runs on uvloop, as Ray runs the shard actors.

Pairs as the soak sends them (a Recommend of 10 on home_feed for one of --users users, then a CLICK
with its decision_id on one of the items shown, value 1 with probability 0.1), each decision's
window closed 0.25 s later (the windows' tick, with its clock 61 s ahead), after --warmup pairs
that fill the users' ledgers. Open loop at --rate pairs/s (the soak's 70% sends ~90 per shard), or
closed loop with --in-flight pairs under way (as its calibration) when --rate is 0. ``--batch B``
sends B pairs of distinct users per call (B Recommends in one call, then their B Records in one), as
the front's batcher does under load: the difference from ``--batch 1`` is what a batch itself costs.

The measured blocks of --pairs pairs alternate between the service as it is and the baselines it
is compared with, in the same process (so the box's noise falls on all of them alike):

- redis-py packing: commands packed by redis-py's own Python packer instead of hiredis'
  (``state/store.py``, ``HiredisPacking``);
- redis-py pipelines: the two writes of every call (durable feedback, write behind) through
  redis-py's pipeline and its pool instead of ``state/direct.py``'s connections;
- no linger: the writer behind starts at once instead of after ``write_behind.LINGER_SECONDS``.

Printed per variant: the shard's CPU per pair (this process, all threads; min and median of its
blocks). ``--profile PATH`` writes a cProfile (CPU time) of the service's blocks.

    .venv/bin/python bench/shard.py                       # open loop at 90 pairs/s
    .venv/bin/python bench/shard.py --rate 0 --in-flight 8
    .venv/bin/python bench/shard.py --batch 4             # the same pairs, 4 per call
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from _cli import run_main
from _report import fmt, print_environment, progress, table
from direct import via_redis_py_switch
from redis.asyncio.connection import AbstractConnection

from rewardloop.state import store
from rewardloop.workers import write_behind
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.messages import Decision, FeedbackCall, RecommendCall
from rewardloop.workers.redis_server import EmbeddedRedis
from rewardloop.workers.shard import ShardCore
from rewardloop.workers.windows import WINDOW_CLOSE_SECONDS

SOAK_CONFIG = Path(__file__).with_name("soak.toml")
SURFACE = "home_feed"


def variants() -> dict[str, Callable[[bool], None]]:
    """Name -> switch (True: on for the next block, False: back to the service as it is)."""
    hiredis_pack = store.HiredisPacking.pack_command
    linger = write_behind.LINGER_SECONDS

    def python_packing(on: bool) -> None:
        store.HiredisPacking.pack_command = AbstractConnection.pack_command if on else hiredis_pack  # type: ignore[method-assign]

    def no_linger(on: bool) -> None:
        write_behind.LINGER_SECONDS = 0.0 if on else linger

    return {
        "service": lambda on: None,
        "redis-py packing (baseline)": python_packing,
        "redis-py pipelines (baseline)": via_redis_py_switch(),
        "no linger": no_linger,
    }


class Pairs:
    """The soak's pairs against one shard, and the windows' tick."""

    def __init__(self, shard: ShardCore, users: int, seed: int, batch: int = 1):
        self.shard = shard
        self.batch = batch
        self.users = users
        self.rng = random.Random(seed)
        self.ticking = False

    async def pair(self) -> None:
        """``batch`` pairs of distinct users: their Recommends in one call, then their Records in one."""
        pseudonyms = [f"{u:032x}" for u in self.rng.sample(range(self.users), self.batch)]
        decisions = await self.shard.recommend([RecommendCall(p, SURFACE, 10) for p in pseudonyms])
        events = []
        for pseudonym, decision in zip(pseudonyms, decisions, strict=True):
            assert isinstance(decision, Decision), decision
            item = self.rng.choice(decision.items).item_id
            click = float(self.rng.random() < 0.1)
            now_ms = int(time.time() * 1000)
            events.append(
                FeedbackCall(pseudonym, uuid.uuid4().hex, item, 1, click, now_ms, decision.decision_id, SURFACE)
            )
        await self.shard.feedback(events)

    def rounded(self, pairs: int) -> int:
        """The pairs ``run(pairs, ...)`` sends: whole batches."""
        return -(-pairs // self.batch) * self.batch

    async def run(self, pairs: int, rate: float, in_flight: int) -> None:
        """``pairs`` more pairs (rounded up to whole batches), open loop at ``rate`` pairs/s or closed
        loop, with the windows' tick."""
        pairs = self.rounded(pairs) // self.batch  # batches from here on
        rate /= self.batch
        self.ticking = True
        ticking = asyncio.get_running_loop().create_task(self._tick())
        try:
            if rate:
                await self._open_loop(pairs, rate)
            else:
                left = [pairs]
                await asyncio.gather(*(self._closed_loop(left) for _ in range(in_flight)))
        finally:
            self.ticking = False
            await ticking

    async def _open_loop(self, pairs: int, rate: float) -> None:
        start, tasks = time.perf_counter(), []
        for sent in range(1, pairs + 1):
            await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
            tasks.append(asyncio.get_running_loop().create_task(self.pair()))
        await asyncio.gather(*tasks)

    async def _closed_loop(self, left: list[int]) -> None:
        while left[0] > 0:
            left[0] -= 1
            await self.pair()

    async def _tick(self) -> None:
        # Until the load is done (a flag, not a count of pairs: a pair that fails must end the run).
        while self.ticking:
            await asyncio.sleep(WINDOW_CLOSE_SECONDS)
            await self.shard.close_due_windows(int(time.time() * 1000) + 61_000)


async def measured(block: Callable[[], Awaitable[None]], profile: cProfile.Profile | None) -> float:
    """CPU seconds of this process over ``block``."""
    start = time.process_time()
    if profile:
        profile.enable()
    await block()
    if profile:
        profile.disable()
    return time.process_time() - start


async def main(args: argparse.Namespace) -> None:
    config = ServiceConfig.load(SOAK_CONFIG)
    load = f"open loop, {args.rate:g} pairs/s" if args.rate else f"closed loop, {args.in_flight} batches in flight"
    load += f", {args.batch} pair{'s' if args.batch > 1 else ''} per call"
    print_environment({"config": str(SOAK_CONFIG), "load": f"{load}, {args.users:,} users, one shard in-process"})
    switches = variants()
    cpu: dict[str, list[float]] = {name: [] for name in switches}
    profile = cProfile.Profile(time.process_time) if args.profile else None
    with EmbeddedRedis() as redis:
        shard = ShardCore(config, redis.url, 0)
        await shard.ready()
        await shard.stop_background()  # the tick below closes the windows, on its own clock
        pairs = Pairs(shard, args.users, args.seed, args.batch)
        per_block = pairs.rounded(args.pairs)
        try:
            progress(f"warm-up: {args.warmup:,} pairs ...")
            await pairs.run(args.warmup, args.rate, args.in_flight)
            for block in range(args.blocks * len(switches)):
                name = list(switches)[block % len(switches)]
                switches[name](True)
                try:
                    seconds = await measured(
                        lambda: pairs.run(args.pairs, args.rate, args.in_flight),
                        profile if name == "service" else None,
                    )
                finally:
                    switches[name](False)
                cpu[name].append(1000 * seconds / per_block)
                progress(f"  block {block + 1}: {name:<28} {fmt(cpu[name][-1])} ms CPU per pair")
        finally:
            await shard.close()
    rows = [[name, fmt(min(ms)), fmt(statistics.median(ms)), str(len(ms))] for name, ms in cpu.items()]
    print(table(["variant", "CPU ms per pair, min", "median", "blocks"], rows))
    if profile:
        profile.dump_stats(args.profile)
        print(f"\nwrote {args.profile} (pstats; CPU time of the service's blocks)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=90.0, help="pairs/s, open loop (0: closed loop; default 90)")
    parser.add_argument("--in-flight", type=int, default=8, help="pairs under way, closed loop (default 8)")
    parser.add_argument("--users", type=int, default=2500, help="distinct users (default 2500, a shard's share)")
    parser.add_argument("--warmup", type=int, default=3000, help="uncounted pairs first (default 3000)")
    parser.add_argument("--pairs", type=int, default=900, help="pairs per measured block (default 900)")
    parser.add_argument("--blocks", type=int, default=4, help="measured blocks per variant (default 4)")
    parser.add_argument("--batch", type=int, default=1, help="pairs per Recommend and per Record call (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="the users' and clicks' random seed")
    parser.add_argument("--profile", metavar="PATH", help="write a cProfile of the service's blocks")
    args = parser.parse_args()
    for name in ("rate", "in_flight", "users", "warmup", "pairs", "blocks", "batch"):
        if getattr(args, name) < (0 if name == "rate" else 1):
            parser.error(f"--{name.replace('_', '-')} must be >= {0 if name == 'rate' else 1}")
    run_main(lambda: main(args), uvloop=True)  # as a shard actor runs
