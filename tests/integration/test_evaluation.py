"""Off-policy evaluation from the service's own logs, via the Admin RPC and the command."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis

from rewardloop.client import AsyncClient
from rewardloop.demo.drive import run_population
from rewardloop.learning.bandits import config_from_dict, make_policy
from rewardloop.simulator import Population
from rewardloop.state.logged_decisions import read_logged_decisions
from rewardloop.v1 import admin_pb2, admin_pb2_grpc
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.redis_server import EmbeddedRedis
from tests.conftest import CONTEXT_FEATURES, ITEMS, LEARN_ITEMS

pytestmark = pytest.mark.cluster
SURFACE = "ope_log"
USERS, ROUNDS = 150, 16


@pytest.fixture(scope="module")
async def logged(service: object) -> Population:
    population = Population(n_users=USERS, n_items=LEARN_ITEMS, seed=2, taste_dim=4, taste_strength=2.0, base_ctr=0.03)
    async with AsyncClient(service.target, default_timeout=10) as client:  # type: ignore[attr-defined]
        await run_population(client, population, SURFACE, ROUNDS, seed=9, user_prefix="ope-", contextual=True)
    await asyncio.gather(*(a.flush.remote() for a in service.actors))  # type: ignore[attr-defined]
    return population


def true_value(population: Population, surface: object, client: redis.Redis, algorithm: str) -> float:
    """The frozen candidate's expected reward on the evaluation half, from the simulator's truth."""
    logs = read_logged_decisions(client, surface, 100_000)  # type: ignore[arg-type]
    train, test = logs.split(int(len(logs) * 0.5))
    policy = make_policy(config_from_dict(algorithm), LEARN_ITEMS, context_dim=logs.contexts.shape[1])
    state = policy.new_state()
    for x, arm, reward in zip(train.contexts, train.actions, train.rewards, strict=True):
        policy.update(state, int(arm), float(reward), context=x)
    user_of = {population.user_features(u).tobytes(): u for u in range(USERS)}
    rng = np.random.default_rng(0)
    values = []
    for x in test.contexts:
        user = user_of[np.ascontiguousarray(x[1:7]).tobytes()]
        truth = population.click_probabilities(user, x[7:9])
        values.append(float(policy.distribution(state, np.arange(LEARN_ITEMS), rng, context=x) @ truth))
    return float(np.mean(values))


async def test_evaluating_the_logging_policy_returns_the_logged_value(
    channel: grpc.aio.Channel, logged: Population
) -> None:
    stub = admin_pb2_grpc.AdminStub(channel)
    reply = await stub.EvaluatePolicy(admin_pb2.EvaluatePolicyRequest(surface=SURFACE), timeout=60)
    assert reply.algorithm == "epsilon_greedy"
    assert reply.train_decisions + reply.eval_decisions == USERS * ROUNDS
    ips = next(e for e in reply.estimates if e.estimator == "ips")
    assert ips.value == pytest.approx(reply.logged_value)
    assert ips.effective_sample_size == pytest.approx(reply.eval_decisions)
    assert {e.estimator for e in reply.estimates} == {"ips", "snips", "dr"}


async def test_a_contextual_candidate_is_estimated_within_its_interval(
    channel: grpc.aio.Channel, logged: Population, service_config: ServiceConfig, redis_client: redis.Redis
) -> None:
    stub = admin_pb2_grpc.AdminStub(channel)
    reply = await stub.EvaluatePolicy(
        admin_pb2.EvaluatePolicyRequest(surface=SURFACE, algorithm="linucb", confidence=0.999), timeout=60
    )
    truth = await asyncio.to_thread(true_value, logged, service_config.surfaces[SURFACE], redis_client, "linucb")
    print(f"linucb candidate: truth {truth:.4f}, logged (uniform) {reply.logged_value:.4f}")
    for e in reply.estimates:
        print(f"  {e.estimator}: {e.value:.4f} [{e.ci_low:.4f}, {e.ci_high:.4f}] ESS {e.effective_sample_size:.0f}")
        assert e.ci_low <= truth <= e.ci_high, e.estimator
    assert truth > 1.5 * reply.logged_value  # the candidate is worth switching to, and OPE says so
    dr = next(e for e in reply.estimates if e.estimator == "dr")
    assert dr.ci_low > reply.logged_value


ADMIN_ERRORS = [
    ({"surface": "nope"}, grpc.StatusCode.NOT_FOUND, "surface"),
    ({"surface": SURFACE, "algorithm": "nope"}, grpc.StatusCode.INVALID_ARGUMENT, "algorithm"),
    ({"surface": SURFACE, "algorithm": "ucb1", "params": {"c": -1.0}}, grpc.StatusCode.INVALID_ARGUMENT, "params"),
    ({"surface": SURFACE, "confidence": 1.5}, grpc.StatusCode.INVALID_ARGUMENT, "confidence"),
    ({"surface": SURFACE, "train_fraction": 1.0}, grpc.StatusCode.INVALID_ARGUMENT, "train_fraction"),
    ({"surface": "eg", "max_decisions": 2_000_000}, grpc.StatusCode.INVALID_ARGUMENT, "max_decisions"),
    ({"surface": "drift_ts", "max_decisions": 10}, grpc.StatusCode.FAILED_PRECONDITION, ""),
]


@pytest.mark.parametrize(("fields", "code", "field"), ADMIN_ERRORS)
async def test_admin_errors(channel: grpc.aio.Channel, fields: dict, code: grpc.StatusCode, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin_pb2_grpc.AdminStub(channel).EvaluatePolicy(admin_pb2.EvaluatePolicyRequest(**fields), timeout=60)
    assert err.value.code() == code
    assert err.value.details().startswith(field)


def test_the_command_prints_the_estimates(logged: Population, redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    items = ", ".join(f'"{i}"' for i in ITEMS[:LEARN_ITEMS])
    features = ", ".join(f'"{f}"' for f in CONTEXT_FEATURES)
    config = tmp_path / "rewardloop.toml"
    config.write_text(
        f'[surfaces.{SURFACE}]\nalgorithm = "epsilon_greedy"\nitems = [{items}]\n'
        f"[surfaces.{SURFACE}.params]\nepsilon = 1.0\n[surfaces.{SURFACE}.features]\nnumeric = [{features}]\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "rewardloop.workers.evaluation", "--redis-url", redis_server.url,
         "--config", str(config), "--surface", SURFACE, "--algorithm", "linucb", "--param", "alpha=0.5"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "candidate linucb: trained on 1200 decisions, evaluated on 1200" in out
    assert all(f"  {name}: " in out for name in ("ips", "snips", "dr"))
