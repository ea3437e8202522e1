"""Recommend over gRPC: the real service next to a plain grpc.aio baseline, same run.

Service: an embedded redis-server (AOF, appendfsync always), a local Ray, and `Service`
(gRPC front in this process + shard actors) with one surface of --items items.
Baseline: a plain `grpc.aio` server in this same process serving the same Recommend RPC
(same proto, same payload) with the same scoring in-process (make_policy + select on a
per-user PolicyState kept in a dict): no Ray, no Redis, no interceptors. It is the floor.

Load: closed loop from a separate process (multiprocessing, spawn), so that the load
generator does not share the server's event loop; on a 2-core box it still competes for
the CPU, which the CPU table shows. Each level: --warmup seconds not counted, then
--duration seconds measured; requests go to --users distinct users picked at random.

    .venv/bin/python bench/recommend.py                      # ucb1, 1/32/128 in flight
    .venv/bin/python bench/recommend.py --all                # + epsilon_greedy, thompson
    .venv/bin/python bench/recommend.py --shards 1,2,4 --levels 32
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
import redis.asyncio as aioredis
from _cli import argument_parser, int_list, run_main, running_service, start_ray
from _load import LoadClients, LoadSpec
from _measure import ROLES, CpuTime, Level, Probe, Stopwatch, histogram_probe, measure
from _report import (
    cpu_cells,
    fmt,
    print_environment,
    print_profile,
    progress,
    progress_level,
    table,
    warn_if_disturbed,
    write_json,
)
from _workload import SURFACE, service_config

from rewardloop.learning.bandits import PolicyState, make_policy
from rewardloop.v1 import recommender_pb2, recommender_pb2_grpc
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.redis_server import EmbeddedRedis

ALGORITHMS = ("ucb1", "epsilon_greedy", "thompson")
# Targets from the issue.
TARGET_SEQUENTIAL_P50_MS = 2.0
TARGET_RPS_AT_32 = 1000.0
TARGET_P99_AT_32_MS = 25.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__)
    parser.add_argument("--levels", type=int_list, default=[1, 32, 128], help="requests in flight")
    parser.add_argument("--algorithm", choices=ALGORITHMS, default="ucb1")
    parser.add_argument("--all", action="store_true", help="every algorithm: " + ", ".join(ALGORITHMS))
    parser.add_argument("--n", type=int, default=10, help="items per Recommend response")
    parser.add_argument("--shards", type=int_list, default=[2], help="service shard counts to run")
    args = parser.parse_args(argv)
    if not 1 <= args.n <= args.items:
        parser.error("--n must be in [1, --items]")
    return args


class BaselineRecommender(recommender_pb2_grpc.RecommenderServicer):
    """The floor: the same RPC and the same scoring, in-process; users kept in a dict."""

    def __init__(self, config: ServiceConfig):
        self._surface = config.surfaces[SURFACE]
        self._policy = make_policy(self._surface.policy_config, len(self._surface.items))
        self._arms = np.arange(len(self._surface.items))
        self._fingerprint = self._surface.fingerprint
        self._users: dict[str, tuple[PolicyState, np.random.Generator]] = {}

    async def Recommend(
        self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendResponse:
        user = self._users.get(request.user_id)
        if user is None:
            user = (self._policy.new_state(), np.random.default_rng([1, len(self._users)]))
            self._users[request.user_id] = user
        state, rng = user
        items = self._surface.items
        return recommender_pb2.RecommendResponse(
            decision_id=uuid.uuid4().hex,
            items=[
                recommender_pb2.RecommendedItem(
                    item_id=items[c.arm], score=c.score, propensity=c.propensity, slot=c.slot
                )
                for c in self._policy.select(state, self._arms, request.n or 1, rng)
            ],
            policy=self._surface.policy_config.name,
            model_version=f"{self._fingerprint}.{state.n_updates}",
        )


@contextlib.asynccontextmanager
async def baseline_server(config: ServiceConfig) -> AsyncIterator[str]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    recommender_pb2_grpc.add_RecommenderServicer_to_server(BaselineRecommender(config), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=1.0)


@dataclass
class Pair:
    algorithm: str
    shards: int
    baseline: Level
    service: Level


async def run_levels(
    clients: LoadClients, label: str, target: str, args: argparse.Namespace, probes: Sequence[Probe]
) -> list[Level]:
    levels = []
    for concurrency in args.levels:
        spec = LoadSpec(
            "recommend", target, concurrency, args.duration, args.warmup,
            users=args.users, items=args.items, n=args.n,
        )  # fmt: skip
        level = await measure(clients, spec, probes)
        progress_level(label, level)
        levels.append(level)
    return levels


async def run(args: argparse.Namespace) -> list[Pair]:
    algorithms = ALGORITHMS if args.all else (args.algorithm,)
    pairs: list[Pair] = []
    profiler = cProfile.Profile() if args.profile else None
    async with contextlib.AsyncExitStack() as stack:
        progress("starting: load process(es), redis-server, local Ray ...")
        clients = await stack.enter_async_context(LoadClients(args.clients))
        redis_server = stack.enter_context(EmbeddedRedis())
        start_ray(stack)
        admin = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        stack.push_async_callback(admin.aclose)
        info = await admin.info("server")
        fsync = (await admin.config_get("appendfsync"))["appendfsync"]
        print_environment(
            {
                "redis-server": f"{info['redis_version']} (embedded, AOF on, appendfsync {fsync})",
                "load": f"{args.clients} separate process(es) (multiprocessing spawn), grpc.aio, closed loop",
                "workload": f"surface of {args.items} items, n={args.n}, {args.users} users, "
                f"{args.warmup:g} s warm-up + {args.duration:g} s per level",
            }
        )
        cpu = CpuTime(clients.pids)
        for algorithm in algorithms:
            async with baseline_server(service_config(algorithm, args.items, 1)) as target:
                baseline = await run_levels(clients, f"baseline {algorithm}", target, args, [cpu])
            for shards in args.shards:
                await admin.flushdb()  # every configuration starts from cold users
                config = service_config(algorithm, args.items, shards)
                prefix = f"bench-{algorithm}-{shards}-{uuid.uuid4().hex[:6]}"
                async with running_service(config, redis_server.url, prefix) as service:
                    assert service.router is not None
                    probes = [
                        cpu,
                        histogram_probe("rewardloop_shard_batch_size", {"kind": "recommend"}, "batch"),
                        histogram_probe(
                            "rewardloop_rpc_duration_seconds",
                            {"method": "Recommend", "code": "OK"},
                            "handler",
                        ),
                        Stopwatch(service.router, "recommend", "shard_wait"),
                    ]
                    if profiler:
                        profiler.enable()
                    label = f"service {algorithm} shards={shards}"
                    levels = await run_levels(clients, label, service.target, args, probes)
                    if profiler:
                        profiler.disable()
                pairs += [Pair(algorithm, shards, b, s) for b, s in zip(baseline, levels, strict=True)]
    report(pairs, args, profiler)
    return pairs


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def report(pairs: list[Pair], args: argparse.Namespace, profiler: cProfile.Profile | None) -> None:
    print("\nRecommend over gRPC: service vs plain grpc.aio baseline (latencies in ms, client-observed)")
    print(
        table(
            ["algorithm", "shards", "in flight", "base rps", "base p50", "base p99",
             "svc rps", "svc p50", "svc p99", "rps ratio", "p50 ratio", "errors"],
            [
                [p.algorithm, p.shards, p.service.spec.concurrency,
                 fmt(p.baseline.rate, 0), fmt(p.baseline.latency_ms(50)), fmt(p.baseline.latency_ms(99)),
                 fmt(p.service.rate, 0), fmt(p.service.latency_ms(50)), fmt(p.service.latency_ms(99)),
                 _ratio(p.service.rate, p.baseline.rate),
                 _ratio(p.service.latency_ms(50), p.baseline.latency_ms(50)),
                 p.baseline.result.errors + p.service.result.errors]
                for p in pairs
            ],
        )
    )  # fmt: skip
    print("(rps ratio = service/baseline throughput; p50 ratio = service/baseline median latency)")
    print("\nWhere the time goes, service: CPU % of one core per process group during the window")
    print("(200% = both cores; other = processes outside this benchmark), mean front->shard batch, and")
    print("mean latency split (ms): client-observed, front handler (rewardloop_rpc_duration_seconds),")
    print("of which awaiting the shard (queue in the front's batcher + actor call + shard work)")
    print(
        table(
            ["algorithm", "shards", "in flight", *(f"cpu {r}" for r in ROLES), "batch",
             "client", "handler", "shard wait"],
            [
                [p.algorithm, p.shards, p.service.spec.concurrency, *cpu_cells(p.service),
                 fmt(p.service.mean("batch"), 1), fmt(1000 * _mean(p.service.result.latencies)),
                 fmt(1000 * p.service.mean("handler")), fmt(1000 * p.service.mean("shard_wait"))]
                for p in pairs
            ],
        )
    )  # fmt: skip
    print("\nBaseline CPU % of one core (server = this process, load = the load generator)")
    baselines = {(p.algorithm, p.service.spec.concurrency): p.baseline for p in pairs}
    print(
        table(
            ["algorithm", "in flight", "cpu server", "cpu load", "cpu other"],
            [[a, c, *(fmt(b.cpu_percent(r), 0) for r in ("server", "load", "other"))]
             for (a, c), b in baselines.items()],
        )
    )  # fmt: skip
    warn_if_disturbed([lv for p in pairs for lv in (p.baseline, p.service)])
    print_targets(pairs)
    if profiler:
        print_profile(profiler, "the service levels")
    if args.json:
        rows = [
            {"algorithm": p.algorithm, "shards": p.shards, "in_flight": p.service.spec.concurrency,
             "baseline": p.baseline.to_json(), "service": p.service.to_json()}
            for p in pairs
        ]  # fmt: skip
        write_json(args.json, args, {"results": rows})


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def print_targets(pairs: list[Pair]) -> None:
    print(
        f"\nTargets (issue): sequential p50 <= {TARGET_SEQUENTIAL_P50_MS:g} ms; "
        f">= {TARGET_RPS_AT_32:,.0f} Recommend/s at 32 in flight with p99 <= {TARGET_P99_AT_32_MS:g} ms"
    )
    for algorithm, shards in dict.fromkeys((p.algorithm, p.shards) for p in pairs):
        runs = [p.service for p in pairs if (p.algorithm, p.shards) == (algorithm, shards)]
        by_level = {level.spec.concurrency: level for level in runs}
        parts = []
        if 1 in by_level:
            p50 = by_level[1].latency_ms(50)
            parts.append(f"sequential p50 {fmt(p50)} ms {_verdict(p50 <= TARGET_SEQUENTIAL_P50_MS)}")
        if 32 in by_level:
            level = by_level[32]
            ok = level.rate >= TARGET_RPS_AT_32 and level.latency_ms(99) <= TARGET_P99_AT_32_MS
            p99 = level.latency_ms(99)
            parts.append(f"32 in flight {fmt(level.rate, 0)} rps, p99 {fmt(p99)} ms {_verdict(ok)}")
        print(f"  service {algorithm} shards={shards}: " + ("; ".join(parts) or "levels 1 and 32 not run"))


def _verdict(ok: bool) -> str:
    return "(met)" if ok else "(MISSED)"


def main() -> None:
    args = parse_args()
    run_main(lambda: run(args))


if __name__ == "__main__":
    main()
