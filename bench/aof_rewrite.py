"""What one AOF rewrite costs the writes beside it, with the replaced AOF freed by Redis or in slices.

An embedded Redis (``workers/redis_server.py``, ``appendfsync always``) holds --keys keys (``DEBUG
POPULATE``, rewritten once into the AOF's base) and an AOF grown to --old-aof-mb MB (writes of 64 KB
values to a few keys, then deleted: the AOF grows, the data does not). Automatic rewrites are off.
A caller then sends --rate transactions a second (MULTI of two stream appends, two hash writes, a
PEXPIRE and a ZADD, ~2 KB, as a Record's and a decision's writes), open loop, each timed from when it
was due; after --before seconds it starts one BGREWRITEAOF and goes on for --after seconds.

Two ways, --repeats times each, one after another:

- baseline: Redis frees the AOF the rewrite replaced itself, in one close (any Redis run by hand);
- slices: the embedded Redis's watcher keeps it by a hard link and frees it 16 MB at a time
  (``ReplacedAof``: what ``make run`` does).

Printed per run: the rewrite's length, the worst latency and the p99 from the rewrite on, the worst
``aof-fsync-always`` Redis' latency monitor saw, and the 250-ms buckets whose worst was over 15 ms.

    .venv/bin/python bench/aof_rewrite.py                     # 450 MB AOF, 3 runs each way, ~3 min
    .venv/bin/python bench/aof_rewrite.py --old-aof-mb 120 --repeats 1
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import redis
import redis.asyncio as aioredis
from _cli import run_main
from _measure import percentile
from _report import fmt, print_environment, progress, table

from rewardloop.workers.redis_server import EmbeddedRedis

JUNK_KEYS = 64
BUCKET_SECONDS = 0.25


def prepare(client: redis.Redis, keys: int, old_aof_mb: int) -> tuple[int, int]:
    """The dataset and a grown AOF; (AOF MB, used memory MB)."""
    client.config_set("auto-aof-rewrite-percentage", 0)
    client.execute_command("DEBUG", "POPULATE", keys, "key", 120)
    client.bgrewriteaof()
    wait_rewrite(client)
    junk = b"j" * 65536
    pipe = client.pipeline(transaction=False)
    while int(client.info("persistence")["aof_current_size"]) < old_aof_mb << 20:
        for k in range(JUNK_KEYS):
            pipe.set(f"junk:{k}", junk)
        pipe.execute()
    client.delete(*(f"junk:{k}" for k in range(JUNK_KEYS)))
    return int(client.info("persistence")["aof_current_size"]) >> 20, int(client.info("memory")["used_memory"]) >> 20


def wait_rewrite(client: redis.Redis, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        persistence = client.info("persistence")
        if not int(persistence["aof_rewrite_in_progress"]) and not int(persistence["aof_rewrite_scheduled"]):
            return
        time.sleep(0.05)
    raise RuntimeError("the AOF rewrite did not finish")


async def drive(url: str, rate: float, before: float, after: float) -> list[tuple[float, float]]:
    """(seconds since the start, latency ms) per transaction; the rewrite starts at ``before``."""
    client = aioredis.Redis.from_url(url)
    value = b"v" * 300
    timed: list[tuple[float, float]] = []
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()

    async def one(n: int, due: float) -> None:
        user = n % 5000
        async with client.pipeline(transaction=True) as pipe:
            pipe.xadd(f"log:{user}", {"e": value}, maxlen=20, approximate=True)
            pipe.hset(f"join:{user}", str(n), value * 3)
            pipe.hset(f"ids:{user}", str(n), "x" * 40)
            pipe.xadd(f"decisions:{user}", {"d": value * 2}, maxlen=20, approximate=True)
            pipe.pexpire(f"log:{user}", 600_000)
            pipe.zadd("windows", {f"{user}:{n}": n})
            await pipe.execute()
        timed.append((due, (time.perf_counter() - start - due) * 1000))

    n, rewriting = 0, False
    while (now := time.perf_counter() - start) < before + after:
        if not rewriting and now >= before:
            await client.bgrewriteaof()
            rewriting = True
        due = n / rate
        if due > now:
            await asyncio.sleep(due - now)
            continue
        task = asyncio.create_task(one(n, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    await asyncio.gather(*tasks)
    await client.aclose()
    return timed


async def one_run(args: argparse.Namespace, slices: bool) -> list[str]:
    with (
        tempfile.TemporaryDirectory(prefix="aof-rewrite-", dir=args.dir) as data_dir,
        EmbeddedRedis(Path(data_dir), free_in_slices=slices) as server,
    ):
        client = redis.Redis.from_url(server.url)
        aof_mb, used_mb = prepare(client, args.keys, args.old_aof_mb)
        client.config_set("latency-monitor-threshold", 10)
        client.execute_command("LATENCY", "RESET")
        timed = await drive(server.url, args.rate, args.before, args.after)
        wait_rewrite(client)
        took = int(client.info("persistence")["aof_last_rewrite_time_sec"])
        stalls = {bytes(e[0]).decode(): int(e[3]) for e in client.execute_command("LATENCY", "LATEST")}
        client.close()
    during = [ms for at, ms in timed if at >= args.before]
    buckets: dict[float, float] = {}
    for at, ms in timed:
        bucket = int(at / BUCKET_SECONDS) * BUCKET_SECONDS - args.before
        buckets[bucket] = max(buckets.get(bucket, 0.0), ms)
    slow = " ".join(f"{b:+.2f}s:{ms:.0f}" for b, ms in sorted(buckets.items()) if ms > 15) or "-"
    return [
        "slices" if slices else "baseline (Redis)",
        str(aof_mb),
        str(used_mb),
        str(took),
        fmt(percentile(during, 99), 1),
        fmt(max(during), 1),
        str(stalls.get("aof-fsync-always", 0)),
        slow,
    ]


async def main(args: argparse.Namespace) -> None:
    print_environment(
        {
            "load": f"{args.rate:g} MULTI/s open loop, one BGREWRITEAOF {args.before:g} s in, {args.after:g} s after",
            "data": f"{args.keys:,} keys (DEBUG POPULATE), AOF grown to {args.old_aof_mb} MB, in {args.dir or '/tmp'}",
        }
    )
    rows = []
    for repeat in range(args.repeats):
        for slices in (False, True):
            progress(f"run {repeat + 1}/{args.repeats}, {'slices' if slices else 'baseline'} ...")
            rows.append(await one_run(args, slices))
    headers = ["replaced AOF freed by", "old AOF MB", "used MB", "rewrite s", "p99 ms", "worst ms", "fsync stall ms"]
    print(table([*headers, "250-ms buckets over 15 ms (from the rewrite's start)"], rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_500_000, help="keys in the dataset (default 1,500,000)")
    parser.add_argument("--old-aof-mb", type=int, default=450, help="the AOF's size when rewritten (default 450)")
    parser.add_argument("--rate", type=float, default=300, help="transactions a second (default 300)")
    parser.add_argument("--before", type=float, default=5, help="seconds of load before the rewrite (default 5)")
    parser.add_argument("--after", type=float, default=15, help="seconds of load from the rewrite on (default 15)")
    parser.add_argument("--repeats", type=int, default=3, help="runs each way (default 3)")
    parser.add_argument("--dir", default=None, help="where the data directories go (default: the temp dir)")
    cli = parser.parse_args()
    run_main(lambda: main(cli))
