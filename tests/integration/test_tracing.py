"""One RPC is one trace from the gRPC front into the shard actor, with no raw user id."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from rewardloop.state.keys import pseudonymize
from rewardloop.v1 import recommender_pb2, recommender_pb2_grpc

pytestmark = pytest.mark.cluster
USER = "trace-me-alice@example.com"


async def _spans(path: Path, trace_id: str, want: int) -> list[dict]:  # type: ignore[type-arg]
    for _ in range(100):
        spans = [json.loads(line) for line in path.read_text().splitlines() if trace_id in line]
        if len(spans) >= want:
            return spans
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {want} spans of trace {trace_id}, found {len(spans)}")


async def test_recommend_is_traced_from_front_to_shard(channel: grpc.aio.Channel, traces_file: Path) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    metadata = (("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),)
    await recommender_pb2_grpc.RecommenderStub(channel).Recommend(
        recommender_pb2.RecommendRequest(user_id=USER, surface="ucb"), metadata=metadata, timeout=5
    )
    spans = await _spans(traces_file, f"0x{trace_id}", want=2)
    by_name = {s["name"]: s for s in spans}
    front = by_name["/rewardloop.v1.Recommender/Recommend"]
    shard = by_name["shard.recommend"]
    assert shard["parent_id"] == front["context"]["span_id"]
    pseudonym = pseudonymize(USER, b"test-key")
    assert front["attributes"]["rewardloop.user"] == pseudonym
    assert shard["attributes"]["rewardloop.user"] == pseudonym
    assert shard["resource"]["attributes"]["service.name"].startswith("rewardloop-shard-")
    assert USER not in traces_file.read_text()
