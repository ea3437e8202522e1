"""The front's direct line to a shard for Recommend and Feedback batches.

A Ray actor call costs about 1 ms of CPU on each side whatever it carries (measured on the 2-core
box: 1.0 ms in the caller and 1.0 ms in an async actor for a no-op; 1.4 + 1.7 ms with a batch of one
call); at the soak's rates that was half the service's CPU. So the hot path skips Ray's task
machinery: each shard actor listens on a TCP socket of its own, and the front sends it
length-prefixed msgpack frames (0.2 ms of CPU on each side for the same batch). Ray still places,
restarts and supervises the shards, and carries every other call (readiness, stats, flush, export).

- **Where it listens.** A front on the shard's node gets a listener on 127.0.0.1; a front on another
  node (KubeRay) one on the shard's node address. A restarted shard listens anew: the front asks the
  actor (through Ray, which waits for the restart) for its endpoint on every reconnect.
- **Who may talk.** A connection must first send the token the actor handed out with its endpoint
  (``secrets.token_bytes``); anything else is closed. Frames are msgpack of our message dataclasses
  only (``encode``/``decode``), never pickle, so a stranger on the network cannot run code.
- **Failures.** A shard that dies with calls in flight closes the connection: they fail with
  ``ShardUnreachable`` (the caller's UNAVAILABLE), as a Ray call to a dead actor did. A Redis error in
  the shard comes back as the same ``redis.exceptions`` class (UNAVAILABLE); anything else as
  ``ShardFailed`` (a bug: INTERNAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import secrets
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgpack
import redis.exceptions

from rewardloop.workers.messages import ChosenItem, Decision, FeedbackCall, RecommendCall, Recorded, Rejected

log = logging.getLogger(__name__)

TOKEN_BYTES = 32
# A frame carries one batch (the front sends at most 256 calls, a few KB); a bigger length is a
# stranger or a bug, and the connection is closed before anything is allocated for it.
MAX_FRAME_BYTES = 16 * 2**20
_LENGTH = struct.Struct("!I")
_OK, _ERROR = 0, 1
# Error kinds of an _ERROR reply.
_REDIS, _FAILED = "redis", "failed"

# The only types a frame may hold besides msgpack's own: each travels as an extension of its own
# code, its fields in declaration order.
_TYPES: tuple[type, ...] = (RecommendCall, FeedbackCall, Decision, ChosenItem, Rejected, Recorded)
_CODES = {cls: code for code, cls in enumerate(_TYPES)}
_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _TYPES}


class ShardUnreachable(ConnectionError):
    """The shard could not be reached, or went away with the call in flight (retry)."""


class ShardFailed(RuntimeError):
    """The shard raised something that is neither the caller's mistake nor Redis': a bug."""


def _default(obj: Any) -> msgpack.ExtType:
    cls = type(obj)
    code = _CODES.get(cls)
    if code is None:
        raise TypeError(f"cannot send a {cls.__name__} to a shard")
    fields = [getattr(obj, name) for name in _FIELDS[cls]]
    if cls is Decision:  # its items as plain rows: a nested extension each cost half the encoding
        fields[1] = [(i.item_id, i.score, i.propensity, i.slot) for i in obj.items]
    return msgpack.ExtType(code, msgpack.packb(fields, default=_default))


def _ext(code: int, data: bytes) -> Any:
    if not 0 <= code < len(_TYPES):
        raise ValueError(f"unknown message type {code}")
    cls = _TYPES[code]
    fields = msgpack.unpackb(data, ext_hook=_ext, use_list=False)
    if cls is Decision:
        decision_id, rows, policy, model_version = fields
        return Decision(decision_id, tuple(ChosenItem(*row) for row in rows), policy, model_version)
    return cls(*fields)


def encode(value: Any) -> bytes:
    """msgpack of ``value``: plain values and our message dataclasses (tuples stay tuples).

    >>> call = RecommendCall("ab" * 16, "home_feed", 10, trace={"traceparent": "00-1"})
    >>> decode(encode([1, "recommend", [call]])) == (1, "recommend", (call,))
    True
    """
    return msgpack.packb(value, default=_default)


def decode(frame: bytes) -> Any:
    return msgpack.unpackb(frame, ext_hook=_ext, use_list=False)


def _frame(value: Any) -> bytes:
    body = encode(value)
    return _LENGTH.pack(len(body)) + body


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if length > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {length} bytes (at most {MAX_FRAME_BYTES})")
    return await reader.readexactly(length)


Handler = Callable[[Sequence[Any]], Awaitable[Sequence[Any]]]


class ChannelServer:
    """The shard's side: answers each frame ``[id, method, calls]`` with ``[id, _OK, results]`` or
    ``[id, _ERROR, [kind, class name, message]]``, as the handler finishes (frames interleave)."""

    def __init__(self, handlers: dict[str, Handler]):
        self._handlers = handlers
        self.token = secrets.token_bytes(TOKEN_BYTES)
        self._servers: dict[str, asyncio.Server] = {}
        self._connections: set[asyncio.Task[None]] = set()

    async def listen(self, host: str) -> int:
        """Listen on ``host`` (once per host; any free port); the port."""
        server = self._servers.get(host)
        if server is None:
            server = await asyncio.start_server(self._serve, host, 0)
            self._servers[host] = server
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        for server in self._servers.values():
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        self._servers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        calls: set[asyncio.Task[None]] = set()
        stopping = False
        try:
            token = await reader.readexactly(TOKEN_BYTES)
            if not hmac.compare_digest(token, self.token):
                log.warning("shard channel: closed a connection that did not present the token")
                return
            while True:
                request_id, method, batch = decode(await _read_frame(reader))
                call = asyncio.get_running_loop().create_task(self._answer(writer, request_id, method, batch))
                calls.add(call)
                call.add_done_callback(calls.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the front went away (or restarts): what it sent is answered or lost with it
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            log.warning("shard channel: closed a connection that sent a malformed frame: %s", exc)
        except asyncio.CancelledError:
            stopping = True  # close(): the shard stops
            raise
        finally:
            self._connections.discard(task)
            # Calls under way finish (feedback made durable stays durable) and answer a front that only
            # half-closed, unless the shard stops.
            if calls and not stopping:
                await asyncio.wait(calls)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, request_id: int, method: str, batch: Sequence[Any]) -> None:
        handler = self._handlers.get(method)
        try:
            if handler is None:
                raise ShardFailed(f"no such shard method {method!r}")
            reply = [request_id, _OK, list(await handler(batch))]
        except redis.exceptions.RedisError as exc:
            reply = [request_id, _ERROR, [_REDIS, type(exc).__name__, str(exc)]]
        except Exception as exc:
            log.exception("shard channel: %s failed", method)
            reply = [request_id, _ERROR, [_FAILED, type(exc).__name__, str(exc)]]
        if writer.is_closing():
            return
        writer.write(_frame(reply))
        with contextlib.suppress(ConnectionError):
            await writer.drain()


Endpoint = tuple[str, int, bytes]


class ChannelClient:
    """The front's side for one shard: one connection, many calls in flight, reconnecting (with a
    fresh endpoint from ``endpoint()``) after the shard went away."""

    def __init__(self, endpoint: Callable[[], Awaitable[Endpoint]]):
        self._endpoint = endpoint
        self._writer: asyncio.StreamWriter | None = None
        self._connecting: asyncio.Lock | None = None
        self._pending: dict[int, asyncio.Future[Sequence[Any]]] = {}
        self._next_id = 0
        self._reader_task: asyncio.Task[None] | None = None

    async def call(self, method: str, batch: Sequence[Any]) -> list[Any]:
        writer = await self._connected()
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[Sequence[Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            writer.write(_frame([request_id, method, list(batch)]))
            await writer.drain()
            return list(await future)
        except ConnectionError as exc:
            raise ShardUnreachable(f"shard connection lost: {exc}") from exc
        finally:
            self._pending.pop(request_id, None)

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        self._drop(ShardUnreachable("channel closed"))

    async def _connected(self) -> asyncio.StreamWriter:
        if self._writer is not None:
            return self._writer
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is None:
                host, port, token = await self._endpoint()
                try:
                    reader, writer = await asyncio.open_connection(host, port)
                except OSError as exc:
                    raise ShardUnreachable(f"cannot connect to the shard at {host}:{port}: {exc}") from exc
                writer.write(token)
                self._writer = writer
                self._reader_task = asyncio.get_running_loop().create_task(self._read(reader, writer))
            return self._writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        error: BaseException = ShardUnreachable("the shard closed the connection (restarting?)")
        try:
            while True:
                request_id, status, body = decode(await _read_frame(reader))
                future = self._pending.pop(request_id, None)
                if future is None or future.done():
                    continue
                if status == _OK:
                    future.set_result(body)
                else:
                    future.set_exception(_error(*body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            error = ShardUnreachable(f"malformed answer from the shard: {exc}")
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            self._drop(error)

    def _drop(self, error: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)


def _error(kind: str, name: str, message: str) -> Exception:
    """The exception an _ERROR reply stands for: Redis' own class (the front maps it to UNAVAILABLE)
    or ShardFailed."""
    if kind == _REDIS:
        cls = getattr(redis.exceptions, name, redis.exceptions.RedisError)
        if isinstance(cls, type) and issubclass(cls, redis.exceptions.RedisError):
            return cls(message)
        return redis.exceptions.RedisError(f"{name}: {message}")
    return ShardFailed(f"{name}: {message}")
