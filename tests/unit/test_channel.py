"""The front-to-shard channel (workers/channel.py): its codec, and both ends over real loopback
sockets in one event loop (no Ray: the shard's side is handed plain coroutines)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from typing import Any

import grpc
import msgpack
import pytest
import redis.exceptions
from hypothesis import given
from hypothesis import strategies as st

from rewardloop.server.status import to_service_error
from rewardloop.workers.channel import (
    MAX_FRAME_BYTES,
    ChannelClient,
    ChannelServer,
    Endpoint,
    ShardFailed,
    ShardUnreachable,
    decode,
    encode,
)
from rewardloop.workers.messages import ChosenItem, Decision, FeedbackCall, RecommendCall, Recorded, Rejected

text = st.text(max_size=40)
floats = st.floats(allow_nan=False)
trace = st.dictionaries(text, text, max_size=3)
recommend_calls = st.builds(
    RecommendCall, text, text, st.integers(1, 1000), st.tuples(text, text), st.tuples(floats, floats), text, trace
)
feedback_calls = st.builds(
    FeedbackCall, text, text, text, st.integers(0, 20), floats, st.integers(0, 2**62), text, text, trace
)
decisions = st.builds(
    Decision,
    text,
    st.lists(st.builds(ChosenItem, text, floats, floats, st.integers(0, 100)), max_size=5).map(tuple),
    text,
    text,
)
results = st.one_of(decisions, st.builds(Recorded, st.booleans(), floats, text), st.builds(Rejected, text, text, text))


@given(st.lists(st.one_of(recommend_calls, feedback_calls, results), max_size=8))
def test_codec_round_trips_every_message_type(batch: list[Any]) -> None:
    assert decode(encode([7, "m", batch])) == (7, "m", tuple(batch))


def test_codec_refuses_other_types_both_ways() -> None:
    with pytest.raises(TypeError, match="cannot send a object"):
        encode([object()])
    with pytest.raises(ValueError, match="unknown message type 99"):
        decode(msgpack.packb(msgpack.ExtType(99, b"\x90")))


async def echo(batch: Sequence[Any]) -> list[Any]:
    return [Recorded(duplicate=False, reward=float(len(c.event_id))) for c in batch]


class Shard:
    """A ChannelServer on 127.0.0.1 with its calls counted; ``endpoint`` as the front asks for it."""

    def __init__(self, **handlers: Any) -> None:
        self.calls = 0

        async def counted(batch: Sequence[Any]) -> Sequence[Any]:
            self.calls += 1
            return await echo(batch)

        self.server = ChannelServer({"feedback": counted, **handlers})
        self.endpoints = 0

    async def endpoint(self) -> Endpoint:
        self.endpoints += 1
        return "127.0.0.1", await self.server.listen("127.0.0.1"), self.server.token


def feedback(event_id: str) -> FeedbackCall:
    return FeedbackCall("ab" * 16, event_id, "item-001", 1, 1.0, 1_000)


async def test_calls_in_flight_are_answered_as_they_finish() -> None:
    release = asyncio.Event()

    async def slow(batch: Sequence[Any]) -> list[Any]:
        await release.wait()
        return await echo(batch)

    shard = Shard(slow=slow)
    client = ChannelClient(shard.endpoint)
    try:
        first = asyncio.create_task(client.call("slow", [feedback("e1")]))
        await asyncio.sleep(0.05)
        # The second call overtakes the first, on the same connection.
        assert await client.call("feedback", [feedback("e22"), feedback("e333")]) == [
            Recorded(False, 3.0),
            Recorded(False, 4.0),
        ]
        assert not first.done()
        release.set()
        assert await first == [Recorded(False, 2.0)]
        assert shard.endpoints == 1
    finally:
        await client.close()
        await shard.server.close()


async def test_errors_come_back_as_redis_classes_or_shard_failed() -> None:
    async def redis_down(batch: Sequence[Any]) -> list[Any]:
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379")

    async def full(batch: Sequence[Any]) -> list[Any]:
        raise redis.exceptions.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")

    async def bug(batch: Sequence[Any]) -> list[Any]:
        raise KeyError("a bug")

    shard = Shard(redis_down=redis_down, full=full, bug=bug)
    client = ChannelClient(shard.endpoint)
    try:
        with pytest.raises(redis.exceptions.ConnectionError, match="Error 111") as down:
            await client.call("redis_down", [feedback("e")])
        assert to_service_error(down.value).code is grpc.StatusCode.UNAVAILABLE
        with pytest.raises(redis.exceptions.ResponseError) as oom:
            await client.call("full", [feedback("e")])
        assert "maxmemory" in to_service_error(oom.value).message
        with pytest.raises(ShardFailed, match="KeyError: 'a bug'") as failed:
            await client.call("bug", [feedback("e")])
        assert to_service_error(failed.value) is None  # a bug: INTERNAL
        with pytest.raises(ShardFailed, match="no such shard method 'nope'"):
            await client.call("nope", [])
        # The connection survived all of it.
        assert await client.call("feedback", [feedback("e")]) == [Recorded(False, 1.0)]
        assert shard.endpoints == 1
    finally:
        await client.close()
        await shard.server.close()


async def test_a_shard_that_goes_away_fails_calls_in_flight_then_the_client_reconnects() -> None:
    never = asyncio.Event()

    async def hang(batch: Sequence[Any]) -> list[Any]:
        await never.wait()
        return []

    old = Shard(hang=hang)
    new = Shard()
    shards = iter([old, new])
    current = next(shards)

    async def endpoint() -> Endpoint:
        return await current.endpoint()

    client = ChannelClient(endpoint)
    try:
        in_flight = asyncio.create_task(client.call("hang", [feedback("e")]))
        await asyncio.sleep(0.05)
        await old.server.close()  # the shard dies (Ray restarts it elsewhere)
        with pytest.raises(ShardUnreachable) as lost:
            await in_flight
        assert to_service_error(lost.value).code is grpc.StatusCode.UNAVAILABLE
        current = next(shards)
        assert await client.call("feedback", [feedback("e1")]) == [Recorded(False, 2.0)]
        assert (old.endpoints, new.endpoints, new.calls) == (1, 1, 1)
    finally:
        await client.close()
        await new.server.close()


async def test_a_shard_that_cannot_be_reached_is_unavailable() -> None:
    shard = Shard()
    port = await shard.server.listen("127.0.0.1")
    await shard.server.close()

    async def endpoint() -> Endpoint:
        return "127.0.0.1", port, shard.server.token

    with pytest.raises(ShardUnreachable, match="cannot connect") as refused:
        await ChannelClient(endpoint).call("feedback", [feedback("e")])
    assert to_service_error(refused.value).code is grpc.StatusCode.UNAVAILABLE


async def raw(shard: Shard, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; all the shard answers before it closes the connection."""
    host, port, _ = await shard.endpoint()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    return answer


def frame(value: Any) -> bytes:
    body = encode(value)
    return struct.pack("!I", len(body)) + body


async def test_strangers_and_malformed_frames_are_closed_without_a_call() -> None:
    shard = Shard()
    token = shard.server.token
    wrong = bytes(b ^ 0xFF for b in token)
    try:
        assert await raw(shard, wrong + frame([1, "feedback", [feedback("e")]])) == b""
        assert await raw(shard, token + struct.pack("!I", MAX_FRAME_BYTES + 1)) == b""
        assert await raw(shard, token + struct.pack("!I", 3) + b"\xc1\xc1\xc1") == b""
        assert await raw(shard, token + frame([1, "feedback"])) == b""  # not [id, method, calls]
        assert shard.calls == 0
        # The token and a well-formed frame get an answer.
        answer = await raw(shard, token + frame([5, "feedback", [feedback("e")]]))
        assert decode(answer[4:]) == (5, 0, (Recorded(False, 1.0),))
        assert shard.calls == 1
    finally:
        await shard.server.close()
