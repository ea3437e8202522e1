"""Recommend on an agent surface, next to a bandit surface and a bare batched forward pass, same run.

Service: an embedded redis-server (AOF, appendfsync always), a local Ray, and `Service` (gRPC front
in this process + shard actors) with two surfaces of the agent-session simulator's 5 actions: an
agent surface (`demo/agent_driver.py`'s `surface_spec()`: DQN, its trainer actor and one Ray Serve
replica answering batched Q-values) and a bandit surface (--algorithm). Feedback burst limits are
lifted as for every load generator; no feedback is sent.

Rows, at each level of requests in flight (--levels):

1. agent: Recommend over gRPC on the agent surface, n=1, each request carrying the simulator's 7
   numeric features (a user's first observation). Each decision calls the Serve replica through a
   handle from the shard and writes the user's session (and the transition of the step before) in
   one Redis MULTI before answering.
2. bandit: Recommend over gRPC on the bandit surface, n=1, same service, no context.
3. forward pass (the floor): the agent surface's Q-network alone in this process, one thread, under
   `inference_mode`, on a batch of min(level, MAX_BATCH) states made once: the largest batch the
   replica can form with that many requests in flight. Its rate is in states/s, its latency per call.
4. The parts of an agent decision, each alone from this process while the service is idle (not a
   sum of the agent row: they overlap and share the cores): the Serve handle call (`q_values_many` on the
   replica, as `ServePolicy` makes it) and the session write (`AgentSurface._write`: XADD of one
   transition + the session's HSET, EXPIRE and ZADD in one MULTI, on a surface of its own).

Load: closed loop from a separate process for the gRPC rows (bench/_load.py's, with requests that
name a surface and carry a context), distinct users per surface drawn at random among --users; the
floor and the parts run the same loop on this process's event loop. Each level: --warmup seconds not
counted, then --duration seconds measured (the parts: 1 s + --parts seconds). Order: floor, bandit,
parts, agent, so the trainer (which learns from every transition the agent levels write, one
gradient step each) is idle during the other rows. --items is not used (the simulator's 5 actions).

    .venv/bin/python bench/agent_recommend.py                    # 1 and 32 in flight, ~2.5 min
    .venv/bin/python bench/agent_recommend.py --levels 1,8,32,64 --duration 20
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from unittest import mock

import _load
import _report
import grpc
import psutil
import redis.asyncio as aioredis
from _cli import argument_parser, int_list, run_main, running_service, start_ray
from _load import RPC_TIMEOUT_SECONDS, Call, LoadClients, LoadResult, LoadSpec
from _measure import CpuTime, Level, Probe, Stopwatch, histogram_probe, measure
from _report import fmt, print_environment, print_profile, progress, progress_level, table, write_json
from _workload import NO_BURST_LIMIT, PSEUDONYM_KEY, user_ids

from rewardloop.demo.agent_driver import CONTEXT, surface_spec
from rewardloop.learning.surface import SurfaceConfig
from rewardloop.server.app import Service
from rewardloop.simulator.agent_env import ACTIONS, AgentSessionEnv
from rewardloop.state.transitions import transitions_key
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.redis_server import EmbeddedRedis

AGENT = "bench_agent"
BANDIT = "bench_bandit"
ALGORITHMS = ("epsilon_greedy", "ucb1", "thompson")
# CPU roles printed, in order: bench/_measure.py's, with Ray's share split into the agent
# surface's Serve replica and trainer (``RoleCpuTime``).
CPU_ROLES = ("server", "shards", "replica", "trainer", "redis", "ray", "load", "other")
Close = Callable[[], Awaitable[None]]
Opener = Callable[[], tuple[Call, Close]]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__)
    parser.set_defaults(duration=10.0, warmup=3.0)
    parser.add_argument("--levels", type=int_list, default=[1, 32], help="requests in flight")
    parser.add_argument("--algorithm", choices=ALGORITHMS, default=ALGORITHMS[0], help="the bandit surface's")
    parser.add_argument("--shards", type=int, default=2, help="service shards")
    parser.add_argument("--parts", type=float, default=3.0, help="measured seconds per part and level (0: none)")
    return parser.parse_args(argv)


def service_config(args: argparse.Namespace) -> ServiceConfig:
    return ServiceConfig.from_dict(
        {
            "service": {"shards": args.shards, "seed": 1, "pseudonym_key": PSEUDONYM_KEY, "quality": NO_BURST_LIMIT},
            "surfaces": {AGENT: surface_spec(), BANDIT: {"algorithm": args.algorithm, "items": list(ACTIONS)}},
        }
    )


# -- load: bench/_load.py's loop, with requests it cannot express ------------------------------


@dataclasses.dataclass(frozen=True)
class SurfaceLoad(LoadSpec):
    """Recommend on `surface`; with `context`, each user's requests carry the simulator's features."""

    surface: str = ""
    context: bool = False


@dataclasses.dataclass(frozen=True)
class InProcessLoad(LoadSpec):
    """Calls made by `opener()` on this process's event loop (``InProcess``), not over gRPC."""

    opener: Opener | None = None


async def _open_recommend(spec: LoadSpec) -> tuple[Call, Close]:
    """Stands in for ``_load._open_recommend`` (whose requests name the one benchmark surface and
    carry no context) for the specs above; ``_load._drive`` runs the closed loop around it."""
    if isinstance(spec, InProcessLoad) and spec.opener is not None:
        return spec.opener()
    assert isinstance(spec, SurfaceLoad), spec
    from rewardloop.v1 import common_pb2, recommender_pb2, recommender_pb2_grpc

    env = AgentSessionEnv()

    def request(k: int, user: str) -> Any:
        context = None
        if spec.context:
            numeric = dict(zip(CONTEXT, env.reset(seed=k)[0].tolist(), strict=True))
            context = common_pb2.Context(numeric=numeric)
        return recommender_pb2.RecommendRequest(user_id=user, surface=spec.surface, context=context, n=spec.n)

    requests = [request(k, u) for k, u in enumerate(user_ids(spec.users, spec.user_prefix))]
    channel = grpc.aio.insecure_channel(spec.target)
    recommend = recommender_pb2_grpc.RecommenderStub(channel).Recommend

    async def call(rng: random.Random) -> tuple[int, int]:
        await recommend(rng.choice(requests), timeout=RPC_TIMEOUT_SECONDS)
        return 1, 0

    return call, channel.close


def _load_process(conn: Any, process: int) -> None:
    """A load process: ``_load._client_main`` with the Recommend requests above."""
    _load._open_recommend = _open_recommend
    _load._client_main(conn, process)


class SurfaceLoadClients(LoadClients):
    """``LoadClients`` whose processes send ``SurfaceLoad`` requests."""

    async def __aenter__(self) -> SurfaceLoadClients:
        with mock.patch.object(_load, "_client_main", _load_process):
            await super().__aenter__()
        return self


class InProcess(LoadClients):
    """Runs an ``InProcessLoad`` with ``_load``'s closed loop on this event loop (no load process)."""

    def __init__(self) -> None:
        super().__init__(processes=0)

    async def run(self, spec: LoadSpec) -> LoadResult:
        with mock.patch.object(_load, "_open_recommend", _open_recommend):
            return await _load._drive(spec, 0)


class RoleCpuTime(CpuTime):
    """``CpuTime`` with the agent surface's Serve replica and trainer taken out of the rest of Ray."""

    MARKERS = (("replica", "ServeReplica"), ("trainer", "HostedTrainer"))

    def __call__(self) -> dict[str, float]:
        totals = super().__call__()
        for name, _ in self.MARKERS:
            totals[f"cpu.{name}"] = 0.0
        for proc in psutil.Process().children(recursive=True):
            try:
                command = " ".join(proc.cmdline())
                name = next((n for n, marker in self.MARKERS if marker in command), "")
                times = proc.cpu_times()
            except psutil.Error:
                continue
            if name:
                totals[f"cpu.{name}"] += times.user + times.system
                totals["cpu.ray"] -= times.user + times.system
        return totals


# -- what runs in this process: the floor and the parts ---------------------------------------


def forward_pass(surface: SurfaceConfig, batch: int) -> Opener:
    """The floor: the surface's Q-network on `batch` states, as a replica's batch, nothing else."""
    import torch

    from rewardloop.learning.agents.dqn import build_network

    torch.set_num_threads(1)
    config = surface.spec.dqn_config(surface.context_dim, len(surface.items))
    network = build_network(config, config.seed).eval()
    states = torch.rand(batch, config.observation_size, generator=torch.Generator().manual_seed(0))

    async def call(rng: random.Random) -> tuple[int, int]:
        with torch.inference_mode():
            network(states)
        return batch, 0

    return lambda: (call, _nothing)


def serve_hop(surface: SurfaceConfig) -> Opener:
    """One state through the replica's deployment handle, as ``ServePolicy`` calls it (a shard's
    batch of one)."""
    from rewardloop.workers.agents import ServePolicy

    policy = ServePolicy(surface.name)
    state = [0.5] * surface.spec.observation_size(surface.context_dim, len(surface.items))

    async def call(rng: random.Random) -> tuple[int, int]:
        await policy.q_values_many([state])
        return 1, 0

    return lambda: (call, _nothing)


def session_write(surface: SurfaceConfig, redis_url: str, users: int) -> Opener:
    """A decision's Redis transaction (``AgentSurface._write``: a transition, then the session) for
    users drawn at random, on a copy of the surface with a stream no trainer reads."""
    from rewardloop.learning.agents.session import Session
    from rewardloop.state.keys import new_decision_id
    from rewardloop.workers.agents import AgentSurface, OpenSession, ServePolicy, Step

    def opener() -> tuple[Call, Close]:
        copy = dataclasses.replace(surface, name=f"{surface.name}_multi")
        redis = aioredis.Redis.from_url(redis_url)
        agent = AgentSurface(copy, redis, 10_000, ServePolicy(copy.name), retention_seconds=86_400)
        state = (0.5,) * agent.state_size
        pseudonyms = user_ids(users, "multi")

        async def call(rng: random.Random) -> tuple[int, int]:
            now = int(time.time() * 1000)
            step = Step(new_decision_id(now), state, 1, "v0", now)
            done = [agent._transition(step, 0.5, state, terminal=False)]
            await agent._write(
                [(rng.choice(pseudonyms), OpenSession(Session.start(now, len(surface.items)), step), done)]
            )
            return 1, 0

        return call, redis.aclose

    return opener


async def _nothing() -> None:
    return None


# -- the run ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    name: str
    unit: str
    levels: dict[int, Level] = dataclasses.field(default_factory=dict)


async def grpc_levels(
    clients: LoadClients, row: Row, surface: str, target: str, args: argparse.Namespace, probes: Sequence[Probe]
) -> None:
    for concurrency in args.levels:
        spec = SurfaceLoad(
            "recommend", target, concurrency, args.duration, args.warmup, users=args.users,
            user_prefix=f"{surface}-user", n=1, surface=surface, context=surface == AGENT,
        )  # fmt: skip
        row.levels[concurrency] = level = await measure(clients, spec, probes)
        progress_level(row.name, level)


async def in_process_level(row: Row, level: int, opener: Opener, concurrency: int, seconds: tuple[float, float],
                           cpu: Probe) -> None:  # fmt: skip
    warmup, duration = seconds
    spec = InProcessLoad("recommend", "", concurrency, duration, warmup, opener=opener)
    row.levels[level] = result = await measure(InProcess(), spec, [cpu])
    progress_level(f"{row.name} (level {level})", result, row.unit)


async def agent_counts(service: Service, admin: aioredis.Redis, shards: int) -> dict[str, float]:
    """What the agent levels left: the shards' counters, the trainer's status, the stream, the sessions."""
    from rewardloop.workers.agents import expiry_key

    counts: dict[str, float] = {}
    for stats in [await actor.stats.remote() for actor in service.actors]:
        for key in ("agent_transitions", "agent_cached_sessions"):
            counts[key] = counts.get(key, 0.0) + float(stats.get(key, 0.0))
    status = await service.trainers[0].status.remote() if service.trainers else {}
    counts["trainer_learned"] = float(status.get("learned", 0))
    counts["trainer_version"] = float(status.get("version", 0))
    counts["stream_length"] = float(await admin.xlen(transitions_key(AGENT)))  # what the trainer has not trimmed
    counts["open_sessions"] = float(sum([await admin.zcard(expiry_key(k)) for k in range(shards)]))
    return counts


async def run(args: argparse.Namespace) -> None:
    config = service_config(args)
    agent_surface = config.surfaces[AGENT]
    rows = {
        key: Row(name, unit)
        for key, name, unit in (
            ("agent", "agent Recommend, gRPC", "req/s"),
            ("bandit", f"bandit ({args.algorithm}) Recommend, gRPC", "req/s"),
            ("floor", "bare forward pass (batch = level)", "states/s"),
            ("hop", "  part: Serve handle q_values", "calls/s"),
            ("multi", "  part: session MULTI in Redis", "writes/s"),
        )
    }
    profiler = cProfile.Profile() if args.profile else None
    async with contextlib.AsyncExitStack() as stack:
        progress("starting: load process(es), redis-server, local Ray ...")
        clients = await stack.enter_async_context(SurfaceLoadClients(args.clients))
        redis_server = stack.enter_context(EmbeddedRedis())
        start_ray(stack)
        admin = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        stack.push_async_callback(admin.aclose)
        fsync = (await admin.config_get("appendfsync"))["appendfsync"]
        version = (await admin.info("server"))["redis_version"]
        dqn = agent_surface.spec.dqn_config(agent_surface.context_dim, len(agent_surface.items))
        print_environment(
            {
                "redis-server": f"{version} (embedded, AOF on, appendfsync {fsync})",
                "load": f"{args.clients} separate process(es) (multiprocessing spawn), grpc.aio, closed loop",
                "workload": f"n=1 of {len(ACTIONS)} actions, {args.users} users a surface, {args.shards} shards, "
                f"{args.warmup:g} s warm-up + {args.duration:g} s per level",
                "agent": f"DQN {dqn.observation_size}-{'-'.join(map(str, dqn.hidden))}-{dqn.n_actions}, "
                f"{agent_surface.spec.replicas} Serve replica(s), torch 1 thread",
            }
        )
        cpu = RoleCpuTime(clients.pids)
        from rewardloop.workers.policy_replicas import MAX_BATCH

        for level in args.levels:
            batch = min(level, MAX_BATCH)
            await in_process_level(rows["floor"], level, forward_pass(agent_surface, batch), 1,
                                   (args.warmup, args.duration), cpu)  # fmt: skip
        async with running_service(config, redis_server.url, f"bench-agent-{uuid.uuid4().hex[:6]}") as service:
            assert service.router is not None
            probes: list[Probe] = [
                cpu,
                histogram_probe("rewardloop_shard_batch_size", {"kind": "recommend"}, "batch"),
                histogram_probe("rewardloop_rpc_duration_seconds", {"method": "Recommend", "code": "OK"}, "handler"),
                Stopwatch(service.router, "recommend", "shard_wait"),
            ]
            if profiler:
                profiler.enable()
            await grpc_levels(clients, rows["bandit"], BANDIT, service.target, args, probes)
            if profiler:
                profiler.disable()
            if args.parts > 0:
                for level in args.levels:
                    seconds = (1.0, args.parts)
                    await in_process_level(rows["hop"], level, serve_hop(agent_surface), level, seconds, cpu)
                    opener = session_write(agent_surface, redis_server.url, args.users)
                    await in_process_level(rows["multi"], level, opener, level, seconds, cpu)
            if profiler:
                profiler.enable()
            await grpc_levels(clients, rows["agent"], AGENT, service.target, args, probes)
            if profiler:
                profiler.disable()
            counts = await agent_counts(service, admin, args.shards)
            progress("stopping: service, Ray, redis-server ...")
    report(list(rows.values()), counts, args, profiler)


def _mean_ms(level: Level, name: str) -> str:
    return fmt(1000 * level.mean(name))


def report(
    rows: list[Row], counts: dict[str, float], args: argparse.Namespace, profiler: cProfile.Profile | None
) -> None:
    for level in args.levels:
        print(f"\n{level} in flight: throughput, and latency in ms (gRPC rows: client-observed; others: per call)")
        print(
            table(
                ["what", "throughput", "unit", "p50", "p99", "errors"],
                [[r.name, fmt(lv.rate, 0), r.unit, fmt(lv.latency_ms(50)), fmt(lv.latency_ms(99)), lv.result.errors]
                 for r in rows if (lv := r.levels.get(level))],
            )
        )  # fmt: skip
    grpc_rows = [r for r in rows if r.name.endswith("gRPC")]
    print("\nWhere the time goes, gRPC rows: CPU % of one core per process group during the window (200% =")
    print("both cores; replica = the agent surface's Serve replica, trainer = its trainer actor, ray = the")
    print("rest of Ray, other = outside this benchmark), mean front->shard batch, and mean latency (ms):")
    print("client-observed, front handler, of which awaiting the shard (batcher + channel + shard work)")
    print(
        table(
            ["what", "in flight", *(f"cpu {r}" for r in CPU_ROLES), "batch", "client", "handler", "shard wait"],
            [[r.name, c, *(fmt(lv.cpu_percent(role), 0) for role in CPU_ROLES), fmt(lv.mean("batch"), 1),
              fmt(1000 * sum(lv.result.latencies) / max(1, len(lv.result.latencies))),
              _mean_ms(lv, "handler"), _mean_ms(lv, "shard_wait")]
             for r in grpc_rows for c, lv in r.levels.items()],
        )
    )  # fmt: skip
    agent = next(r for r in rows if r.name.startswith("agent"))
    answered = sum(lv.result.total_units for lv in agent.levels.values())
    print(
        f"\nAgent surface after the run: {answered:,} decisions answered (warm-ups included); the shards appended "
        f"{counts['agent_transitions']:,.0f} transitions and hold {counts['agent_cached_sessions']:,.0f} sessions "
        f"({counts['open_sessions']:,.0f} open in Redis); the trainer learned from {counts['trainer_learned']:,.0f} "
        f"(version {counts['trainer_version']:.0f} published), {counts['stream_length']:,.0f} wait in the stream "
        f"(XLEN {transitions_key(AGENT)})"
    )
    _report.warn_if_disturbed([lv for r in rows for lv in r.levels.values()])
    if profiler:
        print_profile(profiler, "the gRPC levels")
    if args.json:
        results = [
            {"row": r.name, "unit": r.unit, "in_flight": c, **lv.to_json()} for r in rows for c, lv in r.levels.items()
        ]
        write_json(args.json, args, {"results": results, "agent": counts})


def main() -> None:
    args = parse_args()
    run_main(lambda: run(args))


if __name__ == "__main__":
    main()
