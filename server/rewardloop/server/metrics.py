"""The front's Prometheus metrics, scraped over HTTP: pull-based, so they work with no collector at all.

Names are part of the operating contract (dashboards and the `bench/` probes read them by name).
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

RPC_LATENCY = Histogram(
    "rewardloop_rpc_duration_seconds",
    "Server-side latency of rewardloop RPCs",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
RPC_TOTAL = Counter("rewardloop_rpc_total", "rewardloop RPCs handled", ["method", "code"])
FEEDBACK_EVENTS = Counter("rewardloop_feedback_events_total", "Feedback events by outcome", ["outcome"])
EXPOSURES = Counter(
    "rewardloop_experiment_exposures_total",
    "Assignments answered from the experiment catalogue, by outcome (first exposure, repeat, or lost: storage down)",
    ["outcome"],
)
EXPERIMENTS = Gauge("rewardloop_experiments", "Experiments in the catalogue, by status", ["status"])
EXPOSURE_CACHE = Gauge(
    "rewardloop_experiment_exposure_cache_entries",
    "Exposures the front remembers recording (bounded LRU: repeat calls skip Redis)",
)
MONITOR_ACTIONS = Gauge(
    "rewardloop_experiment_monitor_actions",
    "What this front's experiment monitor did since it started: stop, ramp, conflict (an operator's change"
    " came first), failed (storage did not answer), looks",
    ["action"],
)
SHARD_BATCH_SIZE = Histogram(
    "rewardloop_shard_batch_size",
    "Requests per call from the front to a shard (adaptive micro-batching)",
    ["kind"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)

# What each shard holds, sampled by the front every few seconds (``ShardRouter.sample_stats``).
SHARD_STATS = {
    "bytes": Gauge(
        "rewardloop_shard_memory_bytes", "Bytes a shard accounts for (users, ledgers, decisions)", ["shard"]
    ),
    "budget_bytes": Gauge("rewardloop_shard_memory_budget_bytes", "A shard's memory budget", ["shard"]),
    "users": Gauge("rewardloop_shard_users", "Users a shard holds in memory", ["shard"]),
    "evictions": Gauge(
        "rewardloop_shard_evictions", "Users a shard dropped to stay within its budget, since it started", ["shard"]
    ),
    "decisions": Gauge("rewardloop_shard_recent_decisions", "Decisions a shard remembers for joins", ["shard"]),
    "unsnapshotted": Gauge(
        "rewardloop_shard_unsnapshotted_users", "Users with events no snapshot covers yet", ["shard"]
    ),
    "segment_sample_users": Gauge(
        "rewardloop_shard_segment_sample_users",
        "Users in a shard's samples that segments are fitted from (all surfaces; bounded per surface)",
        ["shard"],
    ),
    "segment_version": Gauge(
        "rewardloop_shard_segment_version_max", "Newest segment model version a shard serves from", ["shard"]
    ),
    "attribution_failed": Gauge(
        "rewardloop_shard_attribution_failed",
        "Events whose experiment attribution Redis refused since the shard started (each call failed, for a retry)",
        ["shard"],
    ),
    "variant_policies": Gauge(
        "rewardloop_shard_variant_policies",
        "Policy-experiment variants a shard decides with (one per variant and surface of running experiments)",
        ["shard"],
    ),
    "agent_cached_sessions": Gauge(
        "rewardloop_shard_agent_sessions_cached", "Agent sessions a shard keeps in memory (bounded)", ["shard"]
    ),
    "agent_transitions": Gauge(
        "rewardloop_shard_agent_transitions", "Agent transitions a shard appended, since it started", ["shard"]
    ),
    "agent_ended": Gauge("rewardloop_shard_agent_sessions_ended", "Sessions ended by SESSION_END", ["shard"]),
    "agent_expired": Gauge("rewardloop_shard_agent_sessions_expired", "Sessions ended by idle timeout", ["shard"]),
}
# Each agent surface's trainer, sampled with the shards (the front's ``_sample_stats_forever``).
TRAINER_STATS = {
    "version": Gauge("rewardloop_trainer_version", "The policy version a trainer last published", ["surface"]),
    "learned": Gauge("rewardloop_trainer_learned", "Transitions a trainer learned from since it started", ["surface"]),
    "stream_entries": Gauge(
        "rewardloop_trainer_stream_entries",
        "Entries in the surface's transition stream: waiting, or learned and not trimmed yet (capped)",
        ["surface"],
    ),
}
# The Redis the service writes to, sampled with the shards (its memory against maxmemory: at the
# limit writes fail with UNAVAILABLE).
REDIS_STATS = {
    "used_memory": Gauge("rewardloop_redis_used_memory_bytes", "Redis used_memory"),
    "maxmemory": Gauge("rewardloop_redis_maxmemory_bytes", "Redis maxmemory (0: no limit)"),
    "keys": Gauge("rewardloop_redis_keys", "Keys in the service's Redis database"),
}
# The cyclic garbage collector in each serving process ("front", "shard-<k>"): workers/heap.py.
HEAP_STATS = {
    "gc_pause_max_seconds": Gauge(
        "rewardloop_gc_pause_max_seconds", "Longest garbage-collection pause in the last minute", ["process"]
    ),
    "gc_freezes": Gauge("rewardloop_gc_freezes", "Times the heap was frozen out of garbage collection", ["process"]),
}
GC_COLLECTIONS = Gauge(
    "rewardloop_gc_collections", "Garbage collections since the process started", ["process", "generation"]
)


def publish_heap(process: str, stats: Mapping[str, float]) -> None:
    """A process's ``Heap.stats`` into the gauges (other keys are ignored)."""
    for name, value in stats.items():
        if name in HEAP_STATS:
            HEAP_STATS[name].labels(process=process).set(value)
        elif name.startswith("gc_collections_gen"):
            GC_COLLECTIONS.labels(process=process, generation=name[-1]).set(value)
