"""Assign for one user across 50 running experiments: in-process and through gRPC, each next to its
baseline measured in the same run.

In-process: `Assigner.assign` (what Assign and Recommend run per call) against a dictionary lookup
of the same answer (the floor for any assignment: the work is done, only fetched) and against the
config file's per-experiment hashing (`assign_all`, one SHA-256 per experiment). Through gRPC: the
service's Assign (a real front, real Redis: the first-exposure script runs on every call) against
a plain `grpc.aio` server answering the same 50 assignments from a dictionary.

    .venv/bin/python bench/assign.py                # 50 experiments in 10 layers
    .venv/bin/python bench/assign.py --layers 50    # one experiment per layer
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import grpc
import numpy as np
import redis.asyncio as aioredis
from _cli import run_main, running_service, start_ray
from _report import environment, progress, table

from rewardloop.learning.experiments import ExperimentConfig, assign_all, lifecycle
from rewardloop.learning.experiments.assigner import Assigner
from rewardloop.learning.experiments.spec import spec_from_dict
from rewardloop.state.experiments import ExperimentStore, now_ms
from rewardloop.v1 import assigner_pb2, assigner_pb2_grpc, common_pb2
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.redis_server import EmbeddedRedis

TARGET_P99_MS = 0.1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=int, default=50)
    parser.add_argument("--layers", type=int, default=10, help="layers the experiments share (1..experiments)")
    parser.add_argument("--calls", type=int, default=20_000, help="in-process calls per contender")
    parser.add_argument("--grpc-calls", type=int, default=3_000, help="sequential gRPC calls per contender")
    return parser.parse_args()


def experiments(args: argparse.Namespace) -> dict[str, lifecycle.Experiment]:
    catalog: dict[str, lifecycle.Experiment] = {}
    per_layer = -(-args.experiments // args.layers)
    for i in range(args.experiments):
        spec = spec_from_dict(
            f"exp{i:03d}",
            {"variants": {"control": 1, "treatment": 1}, "primary_metric": {"source": "click"},
             "layer": f"layer{i % args.layers}", "coverage": 1 / per_layer},
        )  # fmt: skip
        free = lifecycle.layer_free(catalog, spec.layer_key, spec.name)
        catalog[spec.name] = lifecycle.start(lifecycle.create(spec, 0), free, 1)
    return catalog


def latencies(call: Callable[[str], object], users: list[str]) -> np.ndarray:
    out = np.empty(len(users))
    for i, user in enumerate(users):
        start = time.perf_counter()
        call(user)
        out[i] = time.perf_counter() - start
    return out * 1000


def row(name: str, ms: np.ndarray, baseline: np.ndarray | None) -> list[str]:
    p50, p99 = np.percentile(ms, [50, 99])
    ratio = "" if baseline is None else f"{p50 / np.percentile(baseline, 50):.1f}x"
    return [name, f"{p50:.4f}", f"{p99:.4f}", f"{ms.mean():.4f}", ratio]


def in_process(args: argparse.Namespace, catalog: dict[str, lifecycle.Experiment]) -> list[list[str]]:
    users = [f"user-{i}" for i in range(args.calls)]
    assigner = Assigner(catalog.values())
    answers = {u: assigner.assign(u) for u in users}
    enrolled = np.mean([len(a) for a in answers.values()])
    progress(f"in-process: {len(catalog)} experiments in {args.layers} layers, {enrolled:.1f} assignments per user")
    legacy = [ExperimentConfig(n, (("control", 1.0), ("treatment", 1.0)), n, 1.0, ()) for n in catalog]
    baseline = latencies(answers.__getitem__, users)

    def legacy_assign(user: str) -> object:
        return assign_all(legacy, user)

    return [
        row("dict lookup of the answer (baseline)", baseline, None),
        row("Assigner.assign (layers, buckets)", latencies(assigner.assign, users), baseline),
        row("assign_all (config file: a SHA-256 per experiment)", latencies(legacy_assign, users), baseline),
    ]  # fmt: skip


class DictAssigner(assigner_pb2_grpc.AssignerServicer):
    def __init__(self, answers: dict[str, list[tuple[str, str]]]):
        self._answers = answers

    async def Assign(self, request: assigner_pb2.AssignRequest, context: object) -> assigner_pb2.AssignResponse:
        pairs = self._answers.get(request.user_id, [])
        return assigner_pb2.AssignResponse(
            assignments=[common_pb2.ExperimentAssignment(experiment=e, variant=v) for e, v in pairs]
        )


async def timed_grpc(target: str, users: list[str]) -> np.ndarray:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = assigner_pb2_grpc.AssignerStub(channel)
        for user in users[:200]:  # warm-up
            await stub.Assign(assigner_pb2.AssignRequest(user_id=user), timeout=5)
        out = np.empty(len(users))
        for i, user in enumerate(users):
            start = time.perf_counter()
            reply = await stub.Assign(assigner_pb2.AssignRequest(user_id=user), timeout=5)
            out[i] = time.perf_counter() - start
            assert reply.assignments
    return out * 1000


async def through_grpc(args: argparse.Namespace, catalog: dict[str, lifecycle.Experiment]) -> list[list[str]]:
    users = [f"grpc-user-{i}" for i in range(args.grpc_calls)]
    assigner = Assigner(catalog.values())
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    assigner_pb2_grpc.add_AssignerServicer_to_server(DictAssigner({u: assigner.assign(u) for u in users}), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        progress("gRPC baseline: plain grpc.aio answering from a dictionary")
        baseline = await timed_grpc(f"127.0.0.1:{port}", users)
    finally:
        await server.stop(grace=1.0)
    with contextlib.ExitStack() as stack:
        redis_server = stack.enter_context(EmbeddedRedis())
        start_ray(stack)
        async with aioredis.Redis.from_url(redis_server.url) as redis:
            store = ExperimentStore(redis)
            for name, experiment in catalog.items():
                await store.apply(name, "create", lambda _, e=experiment: lifecycle.create(e.spec, now_ms()))
                await store.apply(name, "start", lambda c, n=name: lifecycle.start(
                    c[n], lifecycle.layer_free(c, c[n].spec.layer_key, n), now_ms()))  # fmt: skip
        config = ServiceConfig.from_dict({"shards": 1, "surfaces": {"s": {"algorithm": "ucb1", "items": ["a", "b"]}}})
        async with running_service(config, redis_server.url, "assign-bench") as service:
            progress("service: Assign through the front (first-exposure script included)")
            first = await timed_grpc(service.target, users)
            repeat = await timed_grpc(service.target, users)
    return [
        row("plain grpc.aio, dict answer (baseline)", baseline, None),
        row("rewardloop Assign, first exposures", first, baseline),
        row("rewardloop Assign, repeat calls", repeat, baseline),
    ]


async def main() -> None:
    args = parse_args()
    catalog = experiments(args)
    local = in_process(args, catalog)
    remote = await through_grpc(args, catalog)
    headers = ["contender", "p50 ms", "p99 ms", "mean ms", "p50 vs baseline"]
    print(f"\nAssign for one user across {args.experiments} experiments in {args.layers} layers")
    print(table(headers, local))
    p99 = float(local[1][2])
    verdict = "meets" if p99 <= TARGET_P99_MS else "misses"
    print(f"in-process p99 {p99:.4f} ms {verdict} the target (<= {TARGET_P99_MS} ms for all {args.experiments})\n")
    print(table(headers, remote))
    print("\n" + ", ".join(f"{k}={v}" for k, v in environment().items()))


if __name__ == "__main__":
    run_main(main)
