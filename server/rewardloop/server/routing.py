"""Routing requests to the shard that owns the user, with adaptive micro-batching.

A request goes out at once when its shard has a free slot (so an idle service adds no
wait); while `max_in_flight` calls to that shard are under way, requests queue and
leave together as one batch when a slot frees. Under load, batches grow by themselves;
DESIGN.md measured ~2x throughput on 2 cores from this over one call per request.

Batches travel over each shard's channel (workers/channel.py), not as Ray actor calls; Ray still
answers the rest (stats, flush, export) and tells the front where a restarted shard listens.

In flight per shard: one Recommend batch (deciding is CPU work of the shard's one thread; over Ray
calls, 352 RPC/s at one and 272 at two in bench/soak.py's steady-state calibration) and two Feedback
batches, whose time is mostly Redis' fsync: the shard runs batches of disjoint users at once
(``feedback.UserLocks``), so the next batch's write need not wait for the previous one's. At 275
RPC/s (bench/soak.py --rate 275 --minutes 6) Record p99 per 15 s went from 76-258 ms to 44-130 ms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import ray

from rewardloop.server.metrics import SHARD_BATCH_SIZE, SHARD_STATS, publish_heap
from rewardloop.server.status import to_service_error
from rewardloop.state.keys import shard_for
from rewardloop.workers.channel import ChannelClient, Endpoint
from rewardloop.workers.messages import Decision, FeedbackCall, RecommendCall, Recorded, Rejected

Call = TypeVar("Call")
Result = TypeVar("Result")


class Batcher(Generic[Call, Result]):
    def __init__(
        self,
        send: Callable[[list[Call]], Awaitable[list[Result]]],
        kind: str,
        max_in_flight: int = 2,
        max_batch: int = 256,
    ):
        self._send = send
        self._kind = kind
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._queue: list[tuple[Call, asyncio.Future[Result]]] = []
        self._in_flight = 0

    async def submit(self, call: Call) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((call, future))
        if self._in_flight < self._max_in_flight:
            self._dispatch()
        return await future

    def _dispatch(self) -> None:
        batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
        self._in_flight += 1
        SHARD_BATCH_SIZE.labels(self._kind).observe(len(batch))
        asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[Call, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._send([call for call, _ in batch])
        except BaseException as exc:
            # Ray and Redis failures are the caller's UNAVAILABLE; anything else stays a bug.
            error = to_service_error(exc) or exc
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._in_flight -= 1
            if self._queue and self._in_flight < self._max_in_flight:
                self._dispatch()


class ShardRouter:
    """One recommend and one feedback batcher per shard actor."""

    def __init__(self, actors: Sequence[Any], recommend_in_flight: int = 1, feedback_in_flight: int = 2):
        self.actors = list(actors)
        node = ray.util.get_node_ip_address()
        self._channels = [ChannelClient(_endpoint_of(a, node)) for a in self.actors]
        self._recommend = [
            Batcher[RecommendCall, Decision | Rejected](_send(c, "recommend"), "recommend", recommend_in_flight)
            for c in self._channels
        ]
        self._feedback = [
            Batcher[FeedbackCall, Recorded | Rejected](_send(c, "feedback"), "feedback", feedback_in_flight)
            for c in self._channels
        ]

    def shard_of(self, pseudonym: str) -> int:
        return shard_for(pseudonym, len(self.actors))

    async def recommend(self, call: RecommendCall) -> Decision | Rejected:
        return await self._recommend[self.shard_of(call.pseudonym)].submit(call)

    async def feedback(self, call: FeedbackCall) -> Recorded | Rejected:
        return await self._feedback[self.shard_of(call.pseudonym)].submit(call)

    async def user_state(self, pseudonym: str) -> dict[str, dict[str, Any]]:
        state: dict[str, dict[str, Any]] = await self._ask(pseudonym, "user_state")
        return state

    async def membership(self, pseudonym: str, surface: str) -> dict[str, Any]:
        """The user's membership of the surface's segments (``ShardCore.membership``)."""
        answer: dict[str, Any] = await self._ask(pseudonym, "membership", surface)
        return answer

    async def _ask(self, pseudonym: str, method: str, *args: Any) -> Any:
        """Call ``method`` of the user's shard actor; its failure as the service error it means."""
        try:
            return await getattr(self.actors[self.shard_of(pseudonym)], method).remote(pseudonym, *args)
        except BaseException as exc:
            raise (to_service_error(exc) or exc) from exc

    async def sample_stats(self) -> None:
        """Each shard's holdings (``ShardCore.stats``) into the front's gauges; a shard that does not
        answer keeps its last values."""
        results = await asyncio.gather(*(a.stats.remote() for a in self.actors), return_exceptions=True)
        for shard, stats in enumerate(results):
            if isinstance(stats, BaseException):
                continue
            for name, value in stats.items():
                if name in SHARD_STATS:
                    SHARD_STATS[name].labels(shard=str(shard)).set(value)
            publish_heap(f"shard-{shard}", stats)

    def flush(self, timeout: float = 30.0) -> None:
        ray.get([a.flush.remote() for a in self.actors], timeout=timeout)

    async def close(self) -> None:
        """Close the channels (calls still in flight fail as UNAVAILABLE)."""
        await asyncio.gather(*(c.close() for c in self._channels))


def _endpoint_of(actor: Any, node: str) -> Callable[[], Awaitable[Endpoint]]:
    """The shard's channel endpoint, asked through Ray (which waits for a restarting shard)."""

    async def endpoint() -> Endpoint:
        host, port, token = await actor.endpoint.remote(node)
        return host, port, token

    return endpoint


def _send(channel: ChannelClient, method: str) -> Callable[[list[Any]], Awaitable[list[Any]]]:
    async def send(batch: list[Any]) -> list[Any]:
        return await channel.call(method, batch)

    return send
