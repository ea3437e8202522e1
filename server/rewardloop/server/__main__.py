"""`python -m rewardloop.server` (what `make run` runs).

Starts a local Ray (or joins $RAY_ADDRESS), an embedded real Redis with AOF under
./var/redis (or uses $REDIS_URL), the shard actors and the gRPC front on
$REWARDLOOP_ADDRESS (default localhost:50051). Ctrl-C / SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

import ray
from prometheus_client import start_http_server

from rewardloop.server.app import Service
from rewardloop.workers.config import DEV_PSEUDONYM_KEY, ServiceConfig
from rewardloop.workers.redis_server import EmbeddedRedis
from rewardloop.workers.tracing import configure_tracing, shutdown_tracing

log = logging.getLogger("rewardloop.server")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rewardloop-server", description=__doc__)
    parser.add_argument("--address", default=os.environ.get("REWARDLOOP_ADDRESS", "localhost:50051"))
    parser.add_argument("--config", default=os.environ.get("REWARDLOOP_CONFIG"), help="TOML file")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--data-dir", default=os.environ.get("REWARDLOOP_DATA_DIR", "var"))
    parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("REWARDLOOP_METRICS_PORT", "9464")))
    parser.add_argument("--traces", default=os.environ.get("REWARDLOOP_TRACES", ""))
    return parser.parse_args()


async def serve(args: argparse.Namespace) -> None:
    config = ServiceConfig.load(args.config)
    if config.pseudonym_key == DEV_PSEUDONYM_KEY:
        log.warning("using the development pseudonymisation key; set REWARDLOOP_PSEUDONYM_KEY in production")
    embedded = None
    redis_url = args.redis_url
    if not redis_url:
        embedded = EmbeddedRedis(Path(args.data_dir) / "redis").start()
        redis_url = embedded.url
        log.info("embedded redis-server (AOF on) at %s, data in %s", redis_url, embedded.data_dir)
    tokens = [t for t in os.environ.get("REWARDLOOP_API_KEYS", "").split(",") if t]
    admin_tokens = [t for t in os.environ.get("REWARDLOOP_ADMIN_KEYS", "").split(",") if t]
    configure_tracing(args.traces, service_name="rewardloop-front")
    ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, logging_level=logging.WARNING)
    service = Service(
        config, redis_url, args.address, traces=args.traces, auth_tokens=tokens, admin_tokens=admin_tokens
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await service.start()
        if args.metrics_port:
            start_http_server(args.metrics_port, addr="127.0.0.1")
        print(f"rewardloop serving gRPC on {service.target} (metrics: http://127.0.0.1:{args.metrics_port}/metrics)",
              flush=True)  # fmt: skip
        await stopping.wait()
        print("rewardloop: shutting down gracefully", flush=True)
    finally:
        await service.stop()
        ray.shutdown()
        if embedded is not None:
            embedded.stop()
        shutdown_tracing()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(parse_args()))


if __name__ == "__main__":
    main()
