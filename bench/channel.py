"""What a batch costs to carry from the front to a shard: the channel next to a Ray actor call.

One async Ray actor (as the shards are) answers a batch of --batch RecommendCalls with as many
10-item Decisions, two ways, one call at a time from an asyncio caller (as the front's batchers):

- baseline: a Ray actor call, ``await actor.method.remote(batch)``;
- channel: ``workers/channel.py``, the actor's own socket on 127.0.0.1 (what the service uses).

Printed per call: CPU of the caller and of the actor process (all their threads), and wall time.
The handler's own work is the same both ways; a no-op Ray call is printed too.

    .venv/bin/python bench/channel.py                 # batches of 1 and 16
    .venv/bin/python bench/channel.py --batch 1,4,64 --calls 3000
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import ray
from _cli import int_list, run_main, start_ray
from _report import fmt, print_environment, progress, table

from rewardloop.workers.channel import ChannelClient, ChannelServer, Endpoint
from rewardloop.workers.messages import ChosenItem, Decision, RecommendCall


def decisions(batch: Sequence[RecommendCall]) -> list[Decision]:
    items = tuple(ChosenItem(f"item-{i:03d}", 0.5, 0.1, i) for i in range(10))
    return [Decision("d" * 32, items, "thompson", "abc.1") for _ in batch]


class Shard:
    def __init__(self) -> None:
        self.channel = ChannelServer({"recommend": self.recommend})

    async def recommend(self, batch: Sequence[RecommendCall]) -> list[Decision]:
        return decisions(batch)

    async def noop(self) -> None:
        return None

    async def endpoint(self) -> Endpoint:
        return "127.0.0.1", await self.channel.listen("127.0.0.1"), self.channel.token

    def cpu(self) -> float:
        return time.process_time()


async def measure(actor: Any, call: Any, calls: int) -> tuple[float, float, float]:
    """Per call: caller CPU ms, actor CPU ms, wall ms."""
    for _ in range(calls // 10):
        await call()
    actor0, caller0, wall0 = await actor.cpu.remote(), time.process_time(), time.perf_counter()
    for _ in range(calls):
        await call()
    wall, caller, actor1 = time.perf_counter() - wall0, time.process_time() - caller0, await actor.cpu.remote()
    return 1000 * caller / calls, 1000 * (actor1 - actor0) / calls, 1000 * wall / calls


async def main(batches: list[int], calls: int) -> None:
    with contextlib.ExitStack() as stack:
        start_ray(stack)
        print_environment({"load": f"{calls:,} sequential calls per row, one async actor, asyncio caller"})
        actor = ray.remote(Shard).options(max_concurrency=1000, num_cpus=0).remote()
        client = ChannelClient(actor.endpoint.remote)
        rows: list[list[str]] = []
        noop = await measure(actor, actor.noop.remote, calls)
        rows.append(["no-op Ray call", "-", *(fmt(v) for v in noop)])
        for size in batches:
            batch = [RecommendCall("ab" * 16, "home_feed", 10) for _ in range(size)]
            progress(f"batch of {size} ...")
            over_ray = await measure(actor, lambda b=batch: actor.recommend.remote(b), calls)
            over_channel = await measure(actor, lambda b=batch: client.call("recommend", b), calls)
            rows.append(["Ray call (baseline)", str(size), *(fmt(v) for v in over_ray)])
            rows.append(["channel", str(size), *(fmt(v) for v in over_channel)])
            ratio = (over_ray[0] + over_ray[1]) / (over_channel[0] + over_channel[1])
            rows.append(["  Ray / channel, CPU", str(size), "", fmt(ratio, 1) + "x", ""])
        await client.close()
        print(table(["path", "batch", "caller CPU ms", "actor CPU ms", "wall ms"], rows))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int_list, default=[1, 16], help="calls per batch (default 1,16)")
    parser.add_argument("--calls", type=int, default=2000, help="measured calls per row (default 2000)")
    args = parser.parse_args()
    run_main(lambda: main(args.batch, args.calls))
