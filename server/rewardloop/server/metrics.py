"""The front's Prometheus metrics, scraped over HTTP: pull-based, so they work with no collector at all.

Names are part of the operating contract (dashboards and the `bench/` probes read them by name).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RPC_LATENCY = Histogram(
    "rewardloop_rpc_duration_seconds",
    "Server-side latency of rewardloop RPCs",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
RPC_TOTAL = Counter("rewardloop_rpc_total", "rewardloop RPCs handled", ["method", "code"])
FEEDBACK_EVENTS = Counter("rewardloop_feedback_events_total", "Feedback events by outcome", ["outcome"])
SHARD_BATCH_SIZE = Histogram(
    "rewardloop_shard_batch_size",
    "Requests per call from the front to a shard (adaptive micro-batching)",
    ["kind"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
