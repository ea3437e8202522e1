"""The gRPC surface against the real stack: health, reflection, status codes."""

from __future__ import annotations

import asyncio
import math
import os
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client import REGISTRY

from rewardloop.v1 import (
    assigner_pb2,
    assigner_pb2_grpc,
    common_pb2,
    feedback_pb2,
    feedback_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
)

pytestmark = pytest.mark.cluster
CLICK = feedback_pb2.SIGNAL_CLICK


async def test_health_answers_serving(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "rewardloop.v1.Recommender", "rewardloop.v1.Feedback", "rewardloop.v1.Assigner"):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


async def test_reflection_lets_a_generic_client_call_every_rpc(service: object) -> None:
    # A blocking client must not run on the loop that serves it.
    await asyncio.to_thread(_call_every_rpc_through_reflection, service.target)  # type: ignore[attr-defined]


def _call_every_rpc_through_reflection(target: str) -> None:
    """Descriptors come only from the server: no generated rewardloop classes used."""
    with grpc.insecure_channel(target) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert {"rewardloop.v1.Recommender", "rewardloop.v1.Feedback", "rewardloop.v1.Assigner"} <= services
        pool = descriptor_pool.DescriptorPool(db)

        def call(method_path: str, fields: dict) -> object:
            service_name, method_name = method_path.rsplit(".", 1)
            method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
            request_cls = message_factory.GetMessageClass(method.input_type)
            response_cls = message_factory.GetMessageClass(method.output_type)
            rpc = ch.unary_unary(
                f"/{service_name}/{method_name}",
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )
            return rpc(request_cls(**fields), timeout=10)

        rec = call("rewardloop.v1.Recommender.Recommend", {"user_id": "reflect-1", "surface": "ucb", "n": 2})
        assert len(rec.items) == 2 and rec.decision_id  # type: ignore[attr-defined]
        item = rec.items[0].item_id  # type: ignore[attr-defined]
        fb = call(
            "rewardloop.v1.Feedback.Record",
            {"event_id": "reflect-ev-1", "user_id": "reflect-1", "decision_id": rec.decision_id,  # type: ignore[attr-defined]
             "item_id": item, "signal": 1, "value": 1.0},
        )  # fmt: skip
        assert fb.reward == 1.0  # type: ignore[attr-defined]
        dwell = {
            "event_id": "reflect-ev-2", "user_id": "reflect-1", "surface": "ucb", "item_id": item,
            "signal": 2, "value": 15.0,
        }  # fmt: skip
        batch = call("rewardloop.v1.Feedback.RecordBatch", {"events": [dwell]})
        assert batch.results[0].code == 0 and batch.results[0].reward == 0.5  # type: ignore[attr-defined]
        assigned = call("rewardloop.v1.Assigner.Assign", {"user_id": "reflect-1", "experiments": ["color"]})
        assert assigned.assignments[0].variant in {"blue", "green"}  # type: ignore[attr-defined]


def _shard_processes() -> list[int]:
    """Pids of this test process's shard actors (Ray titles them ``ray::HostedShard...``; its raylet,
    their parent, is a child of the process that started the local cluster): not another cluster's
    on the same machine (a parallel test worker's, a benchmark's)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            shard = entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::HostedShard")
            if shard and os.getpid() in _ancestors(int(entry.name)):
                pids.append(int(entry.name))
        except OSError:  # ended meanwhile
            continue
    return pids


def _ancestors(pid: int) -> set[int]:
    found: set[int] = set()
    while pid > 1 and pid not in found:
        found.add(pid)
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])  # the field after the state: the parent
    return found


async def test_shards_serve_at_the_priority_of_the_front(service: object) -> None:
    """Ray starts its workers at nice 15, as batch work; the shards serve requests
    (``cluster.serve_at_full_priority``)."""
    pids = _shard_processes()
    assert pids and {os.getpriority(os.PRIO_PROCESS, p) for p in pids} == {os.getpriority(os.PRIO_PROCESS, 0)}


async def test_recommend_returns_decision_propensities_and_version(channel: grpc.aio.Channel) -> None:
    stub = recommender_pb2_grpc.RecommenderStub(channel)
    reply = await stub.Recommend(recommender_pb2.RecommendRequest(user_id="api-1", surface="eg", n=5), timeout=5)
    assert len(reply.items) == 5
    assert len({i.item_id for i in reply.items}) == 5
    assert [i.slot for i in reply.items] == [0, 1, 2, 3, 4]
    assert all(0 < i.propensity <= 1 for i in reply.items)
    assert reply.policy == "epsilon_greedy"
    assert reply.model_version.endswith(".0")
    assert [a.experiment for a in reply.assignments] == []  # "color" covers only "ucb"
    ucb = await stub.Recommend(recommender_pb2.RecommendRequest(user_id="api-1", surface="ucb"), timeout=5)
    assert [a.experiment for a in ucb.assignments] == ["color"]


async def test_candidates_restrict_the_choice(channel: grpc.aio.Channel) -> None:
    stub = recommender_pb2_grpc.RecommenderStub(channel)
    allowed = ["item-003", "item-007", "item-011"]
    reply = await stub.Recommend(
        recommender_pb2.RecommendRequest(user_id="api-2", surface="ts", n=3, candidates=allowed), timeout=5
    )
    assert sorted(i.item_id for i in reply.items) == allowed


async def test_feedback_is_counted_once_per_event_id(channel: grpc.aio.Channel, service: object) -> None:
    rec = await recommender_pb2_grpc.RecommenderStub(channel).Recommend(
        recommender_pb2.RecommendRequest(user_id="dup-1", surface="ucb"), timeout=5
    )
    item = rec.items[0].item_id
    event = feedback_pb2.FeedbackEvent(
        event_id="dup-ev", user_id="dup-1", decision_id=rec.decision_id, item_id=item, signal=CLICK, value=1
    )
    stub = feedback_pb2_grpc.FeedbackStub(channel)
    first = await stub.Record(event, timeout=5)
    again = await stub.Record(event, timeout=5)
    in_batch = await stub.RecordBatch(feedback_pb2.RecordBatchRequest(events=[event, event]), timeout=5)
    assert (first.duplicate, again.duplicate) == (False, True)
    assert [r.duplicate for r in in_batch.results] == [True, True]
    from rewardloop.state.keys import pseudonymize

    state = await service.router.user_state(pseudonymize("dup-1", b"test-key"))  # type: ignore[attr-defined]
    arm = int(item.split("-")[1])
    assert state["ucb"]["n_updates"] == 1
    assert sum(state["ucb"]["counts"]) == 1 and state["ucb"]["counts"][arm] == 1


def _rec(**fields: object) -> recommender_pb2.RecommendRequest:
    base: dict[str, object] = {"user_id": "bad-1", "surface": "ucb", "n": 1}
    base.update(fields)
    return recommender_pb2.RecommendRequest(**base)


INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND

RECOMMEND_CASES = [
    ("empty user id", _rec(user_id=""), INVALID, "user_id"),
    ("oversized user id", _rec(user_id="u" * 257), INVALID, "user_id"),
    ("empty surface", _rec(surface=""), INVALID, "surface"),
    ("unknown surface", _rec(surface="nope"), NOT_FOUND, "surface"),
    ("n above max", _rec(n=101), INVALID, "n"),
    ("n above candidates", _rec(n=3, candidates=["item-001", "item-002"]), INVALID, "n"),
    ("n above catalogue", _rec(n=31), INVALID, "n"),
    ("unknown candidate", _rec(candidates=["item-001", "zzz"]), INVALID, "candidates"),
    ("duplicate candidates", _rec(candidates=["item-001", "item-001"]), INVALID, "candidates"),
    ("NaN context", _rec(context=common_pb2.Context(numeric={"x": math.nan})), INVALID, "context.numeric"),
    ("inf context", _rec(context=common_pb2.Context(numeric={"x": math.inf})), INVALID, "context.numeric"),
    ("bad feature name", _rec(context=common_pb2.Context(numeric={"a b": 1.0})), INVALID, "context"),
]


@pytest.mark.parametrize(("name", "request_", "code", "field"), RECOMMEND_CASES, ids=[c[0] for c in RECOMMEND_CASES])
async def test_recommend_rejects_bad_input(
    channel: grpc.aio.Channel, name: str, request_: object, code: grpc.StatusCode, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await recommender_pb2_grpc.RecommenderStub(channel).Recommend(request_, timeout=5)
    assert err.value.code() == code
    assert err.value.details().startswith(field), err.value.details()


def _fb(**fields: object) -> feedback_pb2.FeedbackEvent:
    base: dict[str, object] = {
        "event_id": f"bad-{uuid.uuid4().hex}", "user_id": "bad-1", "surface": "ucb", "item_id": "item-001",
        "signal": CLICK, "value": 1.0,
    }  # fmt: skip
    base.update(fields)
    return feedback_pb2.FeedbackEvent(**base)


def _future(seconds: int) -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    ts.seconds += seconds
    return ts


FEEDBACK_CASES = [
    ("empty event id", _fb(event_id=""), INVALID, "event_id"),
    ("oversized event id", _fb(event_id="e" * 129), INVALID, "event_id"),
    ("empty user id", _fb(user_id=""), INVALID, "user_id"),
    ("oversized user id", _fb(user_id="u" * 300), INVALID, "user_id"),
    ("empty item", _fb(item_id=""), INVALID, "item_id"),
    ("item not in surface", _fb(item_id="zzz"), INVALID, "item_id"),
    ("no surface nor decision", _fb(surface=""), INVALID, "surface"),
    ("unknown surface", _fb(surface="nope"), NOT_FOUND, "surface"),
    ("unknown decision", _fb(surface="", decision_id="no-such-decision"), NOT_FOUND, "decision_id"),
    ("unspecified signal", _fb(signal=0), INVALID, "signal"),
    ("unknown signal", _fb(signal=99), INVALID, "signal"),
    ("negative dwell", _fb(signal=feedback_pb2.SIGNAL_DWELL, value=-1.0), INVALID, "value"),
    ("NaN dwell", _fb(signal=feedback_pb2.SIGNAL_DWELL, value=math.nan), INVALID, "value"),
    ("rating above 5", _fb(signal=feedback_pb2.SIGNAL_RATING, value=6.0), INVALID, "value"),
    ("click of 0.5", _fb(value=0.5), INVALID, "value"),
    ("far future", _fb(occurred_at=_future(3600)), INVALID, "occurred_at"),
]


@pytest.mark.parametrize(("name", "event", "code", "field"), FEEDBACK_CASES, ids=[c[0] for c in FEEDBACK_CASES])
async def test_feedback_rejects_bad_input(
    channel: grpc.aio.Channel, name: str, event: feedback_pb2.FeedbackEvent, code: grpc.StatusCode, field: str
) -> None:
    stub = feedback_pb2_grpc.FeedbackStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Record(event, timeout=5)
    assert err.value.code() == code
    assert err.value.details().startswith(field), err.value.details()
    # The same event inside a batch is rejected alone, with the same code, and the
    # good event beside it is recorded.
    good = _fb(user_id="bad-batch-neighbour")
    reply = await stub.RecordBatch(feedback_pb2.RecordBatchRequest(events=[event, good]), timeout=5)
    assert reply.results[0].code == code.value[0]
    assert reply.results[0].message.startswith(f"events[0].{field}")
    assert (reply.results[1].code, reply.results[1].duplicate) == (0, False)


async def test_feedback_item_must_belong_to_the_decision(channel: grpc.aio.Channel) -> None:
    rec = await recommender_pb2_grpc.RecommenderStub(channel).Recommend(
        recommender_pb2.RecommendRequest(user_id="join-1", surface="ucb", n=1), timeout=5
    )
    other = next(i for i in (f"item-{k:03d}" for k in range(30)) if i != rec.items[0].item_id)
    stub = feedback_pb2_grpc.FeedbackStub(channel)
    for fields, field in (({"item_id": other}, "item_id"), ({"surface": "ts"}, "surface")):
        event = _fb(user_id="join-1", decision_id=rec.decision_id, **{"item_id": rec.items[0].item_id, **fields})
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Record(event, timeout=5)
        assert err.value.code() == INVALID
        assert err.value.details().startswith(field)
    # Someone else's decision is unknown to this user.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Record(_fb(user_id="join-2", surface="", decision_id=rec.decision_id), timeout=5)
    assert err.value.code() == NOT_FOUND


async def test_batch_limits(channel: grpc.aio.Channel) -> None:
    stub = feedback_pb2_grpc.FeedbackStub(channel)
    for events, detail in (
        ([], "events: must not be empty"),
        ([_fb()] * 1001, "events: must have at most 1000"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.RecordBatch(feedback_pb2.RecordBatchRequest(events=events), timeout=10)
        assert err.value.code() == INVALID
        assert err.value.details().startswith(detail)


async def test_assign_is_stable_and_validates(channel: grpc.aio.Channel) -> None:
    stub = assigner_pb2_grpc.AssignerStub(channel)
    first = await stub.Assign(assigner_pb2.AssignRequest(user_id="assign-1"), timeout=5)
    again = await stub.Assign(assigner_pb2.AssignRequest(user_id="assign-1"), timeout=5)
    assert first == again
    assert {a.experiment for a in first.assignments} <= {"color", "layout"}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Assign(assigner_pb2.AssignRequest(user_id="assign-1", experiments=["nope"]), timeout=5)
    assert err.value.code() == NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Assign(assigner_pb2.AssignRequest(user_id=""), timeout=5)
    assert err.value.code() == INVALID


async def test_expired_deadline_is_deadline_exceeded(channel: grpc.aio.Channel) -> None:
    stub = recommender_pb2_grpc.RecommenderStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Recommend(recommender_pb2.RecommendRequest(user_id="dl-1", surface="ucb"), timeout=0.0001)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_batch_of_many_unseen_users_is_recorded(channel: grpc.aio.Channel) -> None:
    """More new users in one call than a shard has Redis connections: all are loaded and recorded."""
    events = [_fb(user_id=f"fresh-{k}", event_id=f"fresh-ev-{k}") for k in range(600)]
    reply = await feedback_pb2_grpc.FeedbackStub(channel).RecordBatch(
        feedback_pb2.RecordBatchRequest(events=events), timeout=60
    )
    assert [r.code for r in reply.results] == [0] * 600
    assert not any(r.duplicate for r in reply.results)


async def test_the_front_shows_what_the_shards_and_redis_hold(channel: grpc.aio.Channel) -> None:
    """rewardloop_shard_* and rewardloop_redis_* gauges, sampled every few seconds (issue 10)."""
    stub = recommender_pb2_grpc.RecommenderStub(channel)
    for k in range(8):
        await stub.Recommend(recommender_pb2.RecommendRequest(user_id=f"metrics-{k}", surface="ucb", n=2))

    def sample(name: str, shard: str | None = None) -> float | None:
        return REGISTRY.get_sample_value(name, {"shard": shard} if shard is not None else {})

    for _ in range(200):  # the sampler runs every 5 s
        # Both sampled after the decisions were written behind (a sample may fall in between).
        users = [sample("rewardloop_shard_users", s) for s in ("0", "1")]
        if all(u is not None and u > 0 for u in users) and (sample("rewardloop_redis_keys") or 0) > 0:
            break
        await asyncio.sleep(0.1)
    for shard in ("0", "1"):
        assert (sample("rewardloop_shard_users", shard) or 0) >= 1
        assert (
            0
            < (sample("rewardloop_shard_memory_bytes", shard) or 0)
            <= (sample("rewardloop_shard_memory_budget_bytes", shard) or 0)
        )
        assert sample("rewardloop_shard_evictions", shard) == 0
        # Each shard froze its heap out of the garbage collector (workers/heap.py).
        assert (REGISTRY.get_sample_value("rewardloop_gc_freezes", {"process": f"shard-{shard}"}) or 0) >= 1
    assert (sample("rewardloop_redis_used_memory_bytes") or 0) > 0 and (sample("rewardloop_redis_keys") or 0) > 0
