"""Session-wide real parts: one embedded redis-server, one local Ray cluster, one
running rewardloop service on 127.0.0.1 (random port), shared by every integration
test. Unit tests use none of them (fixtures are lazy)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import ray
import redis

from rewardloop.workers.cluster import serve_at_full_priority
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.redis_server import EmbeddedRedis
from rewardloop.workers.tracing import configure_tracing
from tests import fuzzing

ITEMS = [f"item-{i:03d}" for i in range(30)]
LEARN_ITEMS = 10
DRIFT_ITEMS = 5
CONTEXT_FEATURES = [f"u{k}" for k in range(6)] + ["c0", "c1"]
# Linear priors count in units of x x^T: with |x|^2 ~ 9 here, 50 is ~5 observations' worth.
CTX_PRIOR_STRENGTH = 50.0
RT_FEATURES = ("decisions_1h", "feedback_1h", "positive_rate_24h", "since_positive", "session_events")
TEST_CONFIG = {
    "service": {
        "shards": 2,
        "seed": 11,
        "snapshot_every": 5,
        "pseudonym_key": "test-key",
        # Simulated users act far faster than people: no burst limit (test_reward_engine checks it).
        "quality": {"burst_per_second": 1_000_000, "burst_per_minute": 1_000_000},
        # Segments change only when a test asks (tests/integration/test_segments.py): a refit landing
        # mid-run at a wall-clock moment would make every learning test's outcome depend on timing.
        "segment_fit_seconds": 0,
    },
    "surfaces": {
        "ucb": {"algorithm": "ucb1", "items": ITEMS},
        "ts": {"algorithm": "thompson", "items": ITEMS},
        "eg": {"algorithm": "epsilon_greedy", "items": ITEMS, "params": {"epsilon": 0.1}},
        # The learning tests' catalogue: the simulator's first LEARN_ITEMS items.
        "learn_ucb": {"algorithm": "ucb1", "items": ITEMS[:LEARN_ITEMS]},
        "learn_ts": {"algorithm": "thompson", "items": ITEMS[:LEARN_ITEMS]},
        # Contextual surfaces: the simulator's observable user features and request context.
        "ctx_linucb": {
            "algorithm": "linucb",
            "items": ITEMS[:LEARN_ITEMS],
            "features": {"numeric": CONTEXT_FEATURES},
            "cold_start": {"strength": CTX_PRIOR_STRENGTH},
        },
        # Cold start: a count-based policy leaning on the population with 2 pseudo-observations.
        "cold_ucb": {
            "algorithm": "ucb1",
            "params": {"c": 0.5},
            "items": ITEMS[:LEARN_ITEMS],
            "cold_start": {"strength": 2.0},
        },
        # First request: served the prior's best item, or explored (the twin).
        "first_ts": {"algorithm": "thompson", "items": ITEMS[:LEARN_ITEMS]},
        "first_ts_explore": {
            "algorithm": "thompson",
            "items": ITEMS[:LEARN_ITEMS],
            "cold_start": {"explore_first": True},
        },
        # Drift: a discounted policy and its stationary twin.
        "drift_dts": {"algorithm": "discounted_thompson", "params": {"gamma": 0.99}, "items": ITEMS[:DRIFT_ITEMS]},
        "drift_ts": {"algorithm": "thompson", "items": ITEMS[:DRIFT_ITEMS], "cold_start": {"strength": 0.0}},
        # Off-policy evaluation: uniform logging (epsilon 1) of contextual traffic.
        "ope_log": {
            "algorithm": "epsilon_greedy",
            "params": {"epsilon": 1.0},
            "items": ITEMS[:LEARN_ITEMS],
            "features": {"numeric": CONTEXT_FEATURES},
        },
        # Reward engine: fused signals (dyadic weights, so sums are exact), a short window whose
        # close teaches the default reward, and a surface that keeps late events out of training.
        "fused": {
            "algorithm": "ucb1",
            "items": ITEMS[:4],
            "reward": {
                "window_seconds": 0.5,
                "default_reward": 0.25,
                "signals": {"dwell": {"weight": 0.5}, "skip": {"weight": -0.5}, "purchase": {"weight": 0.5}},
            },
        },
        # Implicit signals against the true reward (click), same policy.
        "true_ts": {"algorithm": "thompson", "items": ITEMS[:LEARN_ITEMS]},
        "implicit_ts": {
            "algorithm": "thompson",
            "items": ITEMS[:LEARN_ITEMS],
            "reward": {
                "signals": {
                    "click": {"weight": 0.5},
                    "dwell": {"weight": 0.5, "scale": 60},
                    "like": {"weight": 0.5},
                    "skip": {"weight": -0.5},
                }
            },
        },
        "late_ignored": {
            "algorithm": "ucb1",
            "items": ITEMS[:4],
            "reward": {"window_seconds": 1, "late_rule": "ignore_for_training"},
        },
        # Time decay: evidence halves every hour, and its twin without decay.
        "decayed": {
            "algorithm": "epsilon_greedy",
            "params": {"epsilon": 0.0},
            "items": ITEMS[:2],
            "reward": {"half_life_seconds": 3600},
        },
        "undecayed": {"algorithm": "epsilon_greedy", "params": {"epsilon": 0.0}, "items": ITEMS[:2]},
        # Real-time features appended to a request feature.
        "rt_linucb": {
            "algorithm": "linucb",
            "items": ITEMS[:3],
            "features": {"numeric": ["x"], "realtime": list(RT_FEATURES)},
        },
        # The fuzz suite's surfaces: hostile traffic trains only these.
        **fuzzing.SURFACES,
        # The same two at the strength learned from their users (no cold_start.strength).
        "ctx_linucb_learned": {
            "algorithm": "linucb",
            "items": ITEMS[:LEARN_ITEMS],
            "features": {"numeric": CONTEXT_FEATURES},
        },
        "ctx_lints_learned": {
            "algorithm": "lin_ts",
            "items": ITEMS[:LEARN_ITEMS],
            "features": {"numeric": CONTEXT_FEATURES},
        },
        "ctx_lints": {
            "algorithm": "lin_ts",
            "items": ITEMS[:LEARN_ITEMS],
            "features": {"numeric": CONTEXT_FEATURES},
            "cold_start": {"strength": CTX_PRIOR_STRENGTH},
        },
    },
    "experiments": {
        "color": {"variants": {"blue": 1, "green": 1}, "surfaces": ["ucb"]},
        "layout": {"variants": {"grid": 1, "list": 3}, "traffic": 0.5},
    },
}


@pytest.fixture(scope="session")
def service_config() -> ServiceConfig:
    return ServiceConfig.from_dict(TEST_CONFIG)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    runtime_env: dict[str, object] = {"env_vars": {"PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}}
    if os.environ.get("COVERAGE_PROCESS_CONFIG"):
        # Coverage is on (`make test`) and the workers inherit it; Ray kills them without an
        # exit handler, so they save their data as they go (tests/worker_coverage.py). The
        # hook travels by value: the workers cannot import `tests`.
        from tests import worker_coverage

        ray.cloudpickle.register_pickle_by_value(worker_coverage)
        runtime_env["worker_process_setup_hook"] = worker_coverage.save_periodically
    serve_at_full_priority()
    ray.init(
        # A cluster of this session's own, even where another one runs (a second xdist worker's,
        # `make run`'s): without an address Ray may join one that `ray start` recorded.
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        runtime_env=runtime_env,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def traces_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("traces") / "spans.jsonl"
    configure_tracing(f"file:{path}", service_name="rewardloop-front-test")
    return path


@pytest.fixture(scope="session")
async def service(
    ray_cluster: None, redis_server: EmbeddedRedis, service_config: ServiceConfig, traces_file: Path
) -> AsyncIterator[object]:
    from rewardloop.server.app import Service

    svc = Service(service_config, redis_server.url, "127.0.0.1:0", traces=f"file:{traces_file}", monitor_seconds=0.5)
    await svc.start()
    yield svc
    await svc.stop(grace=1.0)


@pytest.fixture(scope="session")
async def channel(service: object) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(service.target) as ch:  # type: ignore[attr-defined]
        yield ch
