"""The benchmarks' command line and process setup: shared options, a local Ray, Ctrl-C handling."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from _report import progress


def argument_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options both benchmarks take."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds before each level")
    parser.add_argument("--users", type=int, default=1000, help="distinct user ids")
    parser.add_argument("--items", type=int, default=100, help="items in the surface's catalogue")
    parser.add_argument("--clients", type=int, default=1, help="load generator processes")
    parser.add_argument("--profile", action="store_true", help="cProfile this process during service levels")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return parser


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated integers >= 1."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def start_ray(stack: contextlib.ExitStack | contextlib.AsyncExitStack) -> None:
    """A local Ray as the tests start it (2 CPUs, no dashboard), shut down with `stack`."""
    import ray

    from rewardloop.workers.cluster import serve_at_full_priority

    serve_at_full_priority()
    ray.init(
        address="local", num_cpus=2, include_dashboard=False,
        logging_level=logging.WARNING, log_to_driver=False,
    )  # fmt: skip
    stack.callback(ray.shutdown)


def run_main(main: Callable[[], Awaitable[object]], *, uvloop: bool = False) -> None:
    """asyncio.run(main()) (on uvloop, the loop Ray's async actors and the front run, if asked);
    Ctrl-C cancels it, everything started is stopped, exit 130."""
    try:
        if uvloop:
            import uvloop as _uvloop

            _uvloop.run(main())
        else:
            asyncio.run(main())
    except KeyboardInterrupt:
        progress("interrupted: load processes, servers, Ray and redis-server were stopped")
        sys.exit(130)


@contextlib.asynccontextmanager
async def running_service(config: Any, redis_url: str, prefix: str) -> AsyncIterator[Any]:
    """The service (a real front, shards on the local Ray, the given Redis) for one measurement."""
    from rewardloop.server.app import Service

    service = Service(config, redis_url, "127.0.0.1:0", shard_prefix=prefix)
    try:
        await service.start()
        yield service
    finally:
        # No snapshot flush: nothing was learned, and a stop must not wait on it.
        await service.stop(grace=1.0, flush=False)
