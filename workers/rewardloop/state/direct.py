"""Pipelines for a shard's two writes per call, sent on connections of their own.

Every Record makes its events durable in one round trip (``Store.record_feedback``), and every
decision is written behind in another (``Store.write_back``). Through redis-py's asyncio pipeline such
a round trip costs ~330 µs of the shard's CPU under uvloop; the same commands on one of redis-py's
own connections cost ~165 µs (2-core box, a one-command pipeline). The difference is the pool's
checkout (a condition, a timeout and a readiness read per call), the pipeline's bookkeeping (HIMPORT
preparation, operation metrics) and its release. At the rates where calls reach a shard one at a
time, that was a tenth of the shard's CPU, paid per call and not per event: the cost a batch
amortises and an open-loop load does not (issue 10, ``bench/shard.py --batch``).

What is kept from redis-py: its connection (protocol, authentication, TLS, the hiredis reader, the
health check and socket timeouts of the URL), its command builders (a ``Pipeline`` queues the
commands, ``execute`` sends them) and its retry policy (the connection's ``Retry``, used as its
pipeline uses it; the store's connections have none, so a connection error fails the call, as it
did through the pipeline). What is dropped: the pool. A round trip
takes an idle connection of its own (at most ``max_connections`` at once; more wait; one the server
closed while it was idle is reopened first, as the pool's checkout does), sends every
command in one write and reads every reply, error replies included, so a connection never
desyncs. Any other failure, or a cancellation mid-way, closes the connection instead of reusing it.

Replies come back raw (no response callbacks): the callers read script results and errors only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

# Commands as a redis-py Pipeline queues them: (args, options).
Commands = Sequence[tuple[tuple[Any, ...], dict[str, Any]]]


class DirectPipelines:
    """Round trips on connections made like ``redis``'s pool makes them, outside it."""

    def __init__(self, redis: aioredis.Redis, max_connections: int = 16):
        self._redis = redis
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[AbstractConnection] = []
        self._open: set[AbstractConnection] = set()

    def pipeline(self) -> Any:
        """A redis-py pipeline to queue commands in (``execute`` below sends them, not its own)."""
        return self._redis.pipeline(transaction=False)

    @property
    def connections(self) -> int:
        return len(self._open)

    async def execute(self, pipe: Any) -> list[Any]:
        """Send what ``pipe`` queued in one round trip: each command's reply, or the ``ResponseError``
        it got. Connection and timeout errors are retried as redis-py's pipeline retries them."""
        commands: Commands = pipe.command_stack
        if not commands:
            return []
        async with self._slots:
            connection = self._idle.pop() if self._idle else self._connection()
            try:
                if await _closed_or_dirty(connection):  # the server closed it while idle (as the pool checks)
                    await connection.disconnect()
                replies = await connection.retry.call_with_retry(
                    lambda: _round_trip(connection, commands), lambda error: connection.disconnect()
                )
            except BaseException:
                self._open.discard(connection)
                await connection.disconnect(nowait=True)
                raise
            self._idle.append(connection)
            return replies

    def _connection(self) -> AbstractConnection:
        pool = self._redis.connection_pool
        connection: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
        self._open.add(connection)
        return connection

    async def close(self) -> None:
        connections, self._idle = list(self._open), []
        self._open.clear()
        for connection in connections:
            await connection.disconnect(nowait=True)


async def _closed_or_dirty(connection: AbstractConnection) -> bool:
    """Whether an idle connection saw the server close it, or holds bytes no command asked for: no
    system call, only what the event loop already read."""
    if not connection.is_connected:
        return False  # opened by the next send
    try:
        return bool(await connection.can_read())
    except (RedisConnectionError, OSError):  # redis-py's, not the builtin: what can_read raises
        return True


async def _round_trip(connection: AbstractConnection, commands: Commands) -> list[Any]:
    await connection.send_packed_command(connection.pack_commands([args for args, _ in commands]))
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await connection.read_response())
        except ResponseError as error:  # the command's own error: the next reply is still on the wire
            replies.append(error)
    return replies
