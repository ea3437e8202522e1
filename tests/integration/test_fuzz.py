"""The error contract under hostile input, through a real gRPC channel to the real stack.

Every RPC gets generated requests (tests/fuzzing.py: strategies from the proto descriptors)
and raw bodies that may not parse; each answer must be a documented status (never UNKNOWN
or INTERNAL) with a short message that names the field and leaks no traceback or path, and
INVALID_ARGUMENT must carry BadRequest field violations. `bench/fuzz.py` runs the same suite
with 50,000+ requests.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rewardloop.client import AsyncClient, InvalidArgument
from rewardloop.v1 import feedback_pb2, feedback_pb2_grpc, recommender_pb2, recommender_pb2_grpc
from tests import fuzzing

pytestmark = pytest.mark.cluster

EXAMPLES = int(os.environ.get("REWARDLOOP_FUZZ_EXAMPLES", "120"))
FUZZ_SURFACES = ("fuzz_items", "fuzz_ctx")


async def _decisions(channel: grpc.aio.Channel, count: int) -> list[str]:
    stub = recommender_pb2_grpc.RecommenderStub(channel)
    found = []
    for k in range(count):
        reply = await stub.Recommend(
            recommender_pb2.RecommendRequest(user_id=f"fuzz-user-{k}", surface="fuzz_items", n=2), timeout=10
        )
        found.append(reply.decision_id)
    return found


@pytest.mark.timeout(900)
async def test_hostile_requests_get_documented_statuses_and_the_service_keeps_serving(
    service: Any, channel: grpc.aio.Channel
) -> None:
    decision_ids = await _decisions(channel, 5)
    examples = {m.name: EXAMPLES for m in fuzzing.methods()} | {"EvaluatePolicy": max(EXAMPLES // 4, 10), "Check": 30}
    config = service.config
    plan = fuzzing.Plan(
        target=service.target,
        surfaces=list(FUZZ_SURFACES),
        items=[i for s in FUZZ_SURFACES for i in config.surfaces[s].items],
        decision_ids=decision_ids,
        experiments=list(config.experiments),
        examples=examples,
        raw_examples=EXAMPLES // 2,
        seed=3,
    )
    report = await fuzzing.fuzz_in_process(plan)
    assert report.problems == [], "\n".join(report.problems[:20])
    # Every method was reached, and the hints got requests past validation (not all rejected).
    assert set(report.codes) == {m.name for m in [*fuzzing.methods(), fuzzing.health_check()]}
    for name in ("Recommend", "Record", "RecordBatch"):
        assert report.codes[name].get("OK", 0) > 0, (name, report.codes[name])
        assert report.codes[name].get("INVALID_ARGUMENT", 0) > 0, (name, report.codes[name])
    health = health_pb2_grpc.HealthStub(channel)
    assert (
        await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    ).status == health_pb2.HealthCheckResponse.SERVING
    rec = await recommender_pb2_grpc.RecommenderStub(channel).Recommend(
        recommender_pb2.RecommendRequest(user_id="after-fuzz", surface="fuzz_items", n=1), timeout=10
    )
    recorded = await feedback_pb2_grpc.FeedbackStub(channel).Record(
        feedback_pb2.FeedbackEvent(
            event_id="after-fuzz-1", user_id="after-fuzz", decision_id=rec.decision_id, item_id=rec.items[0].item_id,
            signal=feedback_pb2.SIGNAL_CLICK, value=1.0,
        ),
        timeout=10,
    )  # fmt: skip
    assert recorded.reward == 1.0 and not recorded.duplicate


BAD_STAMPS = [
    ("occurred_at.nanos", {"seconds": 1_700_000_000, "nanos": -1}),
    ("occurred_at.nanos", {"seconds": 1_700_000_000, "nanos": 1_000_000_000}),
    ("occurred_at.seconds", {"seconds": -(2**62), "nanos": 0}),
    ("occurred_at.seconds", {"seconds": 2**62, "nanos": 0}),
]


@pytest.mark.parametrize(("field", "stamp"), BAD_STAMPS)
async def test_an_out_of_range_timestamp_fails_alone_in_a_batch(
    channel: grpc.aio.Channel, field: str, stamp: dict[str, int]
) -> None:
    stub = feedback_pb2_grpc.FeedbackStub(channel)
    rec = await recommender_pb2_grpc.RecommenderStub(channel).Recommend(
        recommender_pb2.RecommendRequest(user_id="stamp-user", surface="fuzz_items", n=2), timeout=10
    )
    events = [
        feedback_pb2.FeedbackEvent(
            event_id=uuid.uuid4().hex, user_id="stamp-user", decision_id=rec.decision_id, item_id=item.item_id,
            signal=feedback_pb2.SIGNAL_CLICK, value=1.0,
        )
        for item in rec.items
    ]  # fmt: skip
    events.insert(1, feedback_pb2.FeedbackEvent(**{**_fields(events[0]), "event_id": uuid.uuid4().hex}))
    events[1].occurred_at.seconds, events[1].occurred_at.nanos = stamp["seconds"], stamp["nanos"]
    reply = await stub.RecordBatch(feedback_pb2.RecordBatchRequest(events=events), timeout=10)
    codes = [r.code for r in reply.results]
    assert codes == [0, grpc.StatusCode.INVALID_ARGUMENT.value[0], 0], reply
    assert reply.results[1].field == f"events[1].{field}"
    assert reply.results[1].message.startswith(f"events[1].{field}: ")
    assert [r.reward for r in (reply.results[0], reply.results[2])] == [1.0, 1.0]
    # Alone, the same event is INVALID_ARGUMENT with the field in machine-readable details.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Record(events[1], timeout=10)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fuzzing.violations(err.value.trailing_metadata())[0][0] == field


def _fields(event: feedback_pb2.FeedbackEvent) -> dict[str, Any]:
    return {f.name: v for f, v in event.ListFields()}


async def test_undecodable_bodies_are_invalid_argument_not_unknown(channel: grpc.aio.Channel) -> None:
    call = channel.unary_unary("/rewardloop.v1.Recommender/Recommend")
    bad_utf8 = b"\x0a\x03\xff\xfe\xfd"  # user_id (field 1) holding bytes that are not UTF-8
    for body in (b"\xff\xff\xff", bad_utf8, b"\xfb\x07" * 5000, b"\x0a\x10abc"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(body, timeout=10)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, (body[:10], err.value.details())
        assert err.value.details() == "request: the body does not parse as rewardloop.v1.RecommendRequest"


async def test_a_huge_value_is_quoted_by_a_short_prefix(channel: grpc.aio.Channel) -> None:
    stub = recommender_pb2_grpc.RecommenderStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Recommend(recommender_pb2.RecommendRequest(user_id="u", surface="s" * 100_000), timeout=10)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    assert err.value.details().startswith("surface: surface 'ssss") and len(err.value.details()) < 200
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Recommend(
            recommender_pb2.RecommendRequest(user_id="u", surface="fuzz_items", candidates=["i" * 100_000]), timeout=10
        )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "(100000 bytes)" in err.value.details() and len(err.value.details()) < 300


async def test_the_sdk_surfaces_field_violations(service: Any) -> None:
    async with AsyncClient(service.target) as client:
        with pytest.raises(InvalidArgument) as err:
            await client.recommend("sdk-fuzz", "fuzz_items", n=50)
        assert [v.field for v in err.value.violations] == ["n"]
        assert "must be at most the number of candidates" in err.value.violations[0].description
