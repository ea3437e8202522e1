"""`python -m rewardloop.server` (what `make run` runs).

Starts a local Ray (or joins $RAY_ADDRESS), an embedded real Redis with AOF under
./var/redis (or uses $REDIS_URL), the shard actors and the gRPC front on
$REWARDLOOP_ADDRESS (default localhost:50051). Ctrl-C / SIGTERM stops it gracefully:
the front drains, the shards write their final snapshots, then Ray and Redis stop.

When it starts Ray or Redis itself, the service runs in a session of its own under a
small supervisor that stays in the terminal's process group (see
`rewardloop.server.supervisor`): signals sent to the group reach only the supervisor,
which stops the service in order, and nothing outlives the service, even a kill -9.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from rewardloop.server.supervisor import SUPERVISOR_ENV, supervise
from rewardloop.workers.lifetime import set_parent_death_signal

log = logging.getLogger("rewardloop.server")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The front's event loop: libuv's (uvloop, as Ray's async actors use) or the standard library's.
EVENT_LOOPS = ("uvloop", "asyncio")
# A stop signal that arrives before the event loop's handlers are installed.
_stop_requested = threading.Event()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rewardloop-server", description=__doc__)
    parser.add_argument(
        "--address",
        default=os.environ.get("REWARDLOOP_ADDRESS", "localhost:50051"),
        help="host:port to serve gRPC on; port 0 picks a free one (the chosen one is printed)",
    )
    parser.add_argument("--config", default=os.environ.get("REWARDLOOP_CONFIG"), help="TOML file")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"), help="default: an embedded redis-server")
    parser.add_argument("--data-dir", default=os.environ.get("REWARDLOOP_DATA_DIR", "var"))
    parser.add_argument(
        "--redis-maxmemory-mb",
        type=int,
        default=int(os.environ.get("REWARDLOOP_REDIS_MAXMEMORY_MB", "0")),
        help="memory limit of the embedded redis-server (noeviction: full means writes fail, UNAVAILABLE); "
        "default: a quarter of this machine's memory",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("REWARDLOOP_METRICS_PORT", "9464")),
        help="Prometheus metrics on 127.0.0.1; 0 disables them",
    )
    parser.add_argument("--traces", default=os.environ.get("REWARDLOOP_TRACES", ""))
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=os.environ.get("REWARDLOOP_EVENT_LOOP", "uvloop"),
        help="the front's asyncio event loop (bench/event_loop.py measures both; default uvloop)",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    # Imported here: the supervisor runs this module too, and needs none of these
    # (measured: 0.1 s and 12 MB without them, 4.5 s and 105 MB with them on a busy box).
    import ray
    from prometheus_client import start_http_server

    from rewardloop.server.app import Service
    from rewardloop.workers.cluster import serve_at_full_priority
    from rewardloop.workers.config import DEV_PSEUDONYM_KEY, ServiceConfig
    from rewardloop.workers.heap import Heap
    from rewardloop.workers.redis_server import EmbeddedRedis, default_maxmemory
    from rewardloop.workers.tracing import configure_tracing, shutdown_tracing

    config = ServiceConfig.load(args.config)
    if config.pseudonym_key == DEV_PSEUDONYM_KEY:
        log.warning("using the development pseudonymisation key; set REWARDLOOP_PSEUDONYM_KEY in production")
    tokens = [t for t in os.environ.get("REWARDLOOP_API_KEYS", "").split(",") if t]
    admin_tokens = [t for t in os.environ.get("REWARDLOOP_ADMIN_KEYS", "").split(",") if t]
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    def catch_stop_signals() -> None:
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stopping.set)

    catch_stop_signals()
    if _stop_requested.is_set():
        stopping.set()
    embedded: EmbeddedRedis | None = None
    service: Service | None = None
    try:
        redis_url = args.redis_url
        if not redis_url:
            maxmemory = args.redis_maxmemory_mb * 2**20 or default_maxmemory()
            embedded = EmbeddedRedis(Path(args.data_dir) / "redis", maxmemory=maxmemory).start()
            redis_url = embedded.url
            log.info("embedded redis-server (AOF on) at %s, data in %s", redis_url, embedded.data_dir)
        configure_tracing(args.traces, service_name="rewardloop-front")
        # "local": without $RAY_ADDRESS, start our own Ray even if a `ray start` cluster
        # runs on this machine (address=None would join it, and we would not own it).
        serve_at_full_priority()
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False,
                 logging_level=logging.WARNING)  # fmt: skip
        catch_stop_signals()  # ray.init() installs its own SIGTERM handler (sys.exit)
        heap = Heap()
        service = Service(
            config, redis_url, args.address, traces=args.traces, auth_tokens=tokens, admin_tokens=admin_tokens,
            heap=heap,
        )  # fmt: skip
        await service.start()
        heap.start()  # what the front holds once started is frozen, once (workers/heap.py)
        if not stopping.is_set():
            if args.metrics_port:
                start_http_server(args.metrics_port, addr="127.0.0.1")
            metrics = f"http://127.0.0.1:{args.metrics_port}/metrics" if args.metrics_port else "off"
            event_loop = type(asyncio.get_running_loop()).__module__.split(".")[0]  # uvloop or asyncio
            print(f"rewardloop serving gRPC on {service.target} (metrics: {metrics}, event loop: {event_loop})",
                  flush=True)  # fmt: skip
            await stopping.wait()
        print("rewardloop: shutting down gracefully", flush=True)
    finally:
        # In reverse order of start: Ray and Redis still run while the front drains and
        # the shards flush their final snapshots.
        start = time.monotonic()
        done: list[str] = []  # what had stopped when, for the log
        if service is not None:
            await service.stop()
            done.append(f"front and shards at +{time.monotonic() - start:.1f} s")
        ray.shutdown()  # our local Ray: ends its processes; $RAY_ADDRESS: only disconnects
        done.append(f"Ray at +{time.monotonic() - start:.1f} s")
        if embedded is not None:
            embedded.stop()
            done.append(f"Redis at +{time.monotonic() - start:.1f} s")
        shutdown_tracing()
        log.info("stopped: %s", ", ".join(done))


def _starts_processes(args: argparse.Namespace) -> bool:
    """Whether the service starts Redis or Ray itself (else there is nothing to supervise)."""
    return not args.redis_url or not os.environ.get("RAY_ADDRESS")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args()
    supervisor = os.environ.pop(SUPERVISOR_ENV, None)
    if supervisor is None and _starts_processes(args):
        sys.exit(supervise(sys.argv[1:]))
    if supervisor is not None:
        # The supervisor's death, even by SIGKILL, stops us gracefully; if it died before
        # this line, our parent is already someone else.
        set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != int(supervisor):
            sys.exit(1)
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: _stop_requested.set())
    if args.event_loop == "uvloop":
        import uvloop

        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))
    # Everything that needs an orderly stop has stopped. The interpreter's own teardown
    # with Ray loaded is a full garbage collection of its modules: 2-4 s of CPU measured
    # on a busy 2-core box, for nothing.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
