"""What the benchmarks send: the one surface they serve, its items and users, the click rate.

Shared by the load processes (which build requests from it) and the benchmark scripts (which
configure the service with it), so both sides agree on names without passing them around.
"""

from __future__ import annotations

from rewardloop.workers.config import ServiceConfig

SURFACE = "bench"
PSEUDONYM_KEY = "bench-pseudonym-key"
# Load generators are no humans: lift the burst limit (rewards/quality.py) that would flag them.
NO_BURST_LIMIT = {"burst_per_second": 1_000_000, "burst_per_minute": 1_000_000}
CTR = 0.2  # share of CLICK events with value 1


def item_ids(count: int) -> list[str]:
    return [f"item-{i:03d}" for i in range(count)]


def user_ids(count: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(count)]


def service_config(algorithm: str, items: int, shards: int) -> ServiceConfig:
    """One surface, `items` items, no experiments: the configuration both benchmarks serve."""
    return ServiceConfig.from_dict(
        {
            "service": {"shards": shards, "seed": 1, "pseudonym_key": PSEUDONYM_KEY, "quality": NO_BURST_LIMIT},
            "surfaces": {SURFACE: {"algorithm": algorithm, "items": item_ids(items)}},
        }
    )
