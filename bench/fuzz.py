"""The long fuzz run: 50,000+ hostile requests across every RPC against the real stack.

Starts an embedded redis-server, a local Ray and the service on 127.0.0.1, sends the
generated requests and raw bodies of tests/fuzzing.py (the CI suite's strategies, at a
larger size), and prints the status codes per method, every breach of the error contract
(any UNKNOWN or INTERNAL, a message that leaks a traceback or echoes a huge value,
INVALID_ARGUMENT without field violations), and whether the service still serves a valid
Recommend + Record afterwards. Exit status 1 when anything broke the contract.

    .venv/bin/python bench/fuzz.py                      # ~52,500 requests, 10-20 minutes on 2 cores
    .venv/bin/python bench/fuzz.py --examples 500 --raw 200  # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _cli import start_ray
from _report import table

from rewardloop.server.app import Service
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.redis_server import EmbeddedRedis
from tests import fuzzing

CONFIG = {
    "service": {"shards": 2, "seed": 5, "pseudonym_key": "fuzz-key"},
    "surfaces": fuzzing.SURFACES,
    "experiments": {"color": {"variants": {"blue": 1, "green": 1}, "surfaces": ["fuzz_items"]}},
}


async def main(args: argparse.Namespace) -> int:
    config = ServiceConfig.from_dict(CONFIG)
    with contextlib.ExitStack() as stack:
        redis_server = stack.enter_context(EmbeddedRedis())
        start_ray(stack)
        service = await Service(config, redis_server.url, "127.0.0.1:0").start()
        try:
            return await _run(args, config, service)
        finally:
            await service.stop(grace=1.0)


async def _run(args: argparse.Namespace, config: ServiceConfig, service: Service) -> int:
    from rewardloop.client import AsyncClient

    async with AsyncClient(service.target) as client:
        decisions = [(await client.recommend(f"fuzz-user-{k}", "fuzz_items", n=2)).decision_id for k in range(10)]
    # The admin RPC runs an evaluation (a Ray task) for the requests that pass validation.
    examples = {m.name: args.examples for m in fuzzing.methods()} | {
        "EvaluatePolicy": max(args.examples // 10, 1),
        "Check": max(args.examples // 10, 1),
    }
    plan = fuzzing.Plan(
        target=service.target,
        surfaces=list(config.surfaces),
        items=[i for s in config.surfaces.values() for i in s.items],
        decision_ids=decisions,
        experiments=list(config.experiments),
        examples=examples,
        raw_examples=args.raw,
        seed=args.seed,
    )
    start = time.perf_counter()
    report = await fuzzing.fuzz_in_process(plan)
    seconds = time.perf_counter() - start
    codes = sorted({code for by_code in report.codes.values() for code in by_code})
    rows = [
        [name, *(by_code.get(code, 0) for code in codes), sum(by_code.values())]
        for name, by_code in report.codes.items()
    ]
    rows.append(["all", *(sum(b.get(code, 0) for b in report.codes.values()) for code in codes), report.calls])
    print(table(["method", *codes, "requests"], rows))
    print(f"\n{report.calls:,} requests in {seconds:.0f} s; contract breaches: {len(report.problems)}")
    for problem in report.problems[:30]:
        print("  " + problem)
    serving = await _still_serving(service.target)
    print(f"after the run: health SERVING and a valid Recommend + Record acknowledged: {serving}")
    return 0 if serving and not report.problems else 1


async def _still_serving(target: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from rewardloop.client import AsyncClient

    async with grpc.aio.insecure_channel(target) as channel:
        status = (await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)).status
    async with AsyncClient(target) as client:
        rec = await client.recommend("after-fuzz", "fuzz_items", n=1)
        result = await client.record("after-fuzz", rec.item_ids[0], "click", 1.0, decision_id=rec.decision_id)
    return status == health_pb2.HealthCheckResponse.SERVING and result.reward == 1.0 and not result.duplicate


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=7500, help="generated requests per RPC")
    parser.add_argument("--raw", type=int, default=3500, help="raw (maybe undecodable) bodies per RPC")
    parser.add_argument("--seed", type=int, default=0)
    sys.exit(asyncio.run(main(parser.parse_args())))
