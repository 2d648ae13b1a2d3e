"""The console path's core: relay bytes both ways between two pipes (a websocket, a socket) until one ends.

Used twice on every console connection: the console proxy relays browser websocket ↔ agent tunnel, the
agent relays tunnel ↔ the VM's console socket. What it guarantees:
- flow control both ways: each direction moves one chunk at a time, and a pipe's `send` waits while its
  transport is above its high-water mark; a socket pipe stops reading while `high_water` bytes wait
  unread, aiohttp's websocket reader does the same (its queue limit), so a slow reader slows the writer
  instead of filling memory;
- no per-chunk work beyond handing the chunk over: a socket chunk is the bytes object the transport read,
  passed on without copying or re-chunking; a websocket message is one chunk;
- a clean close both ways: when one side ends, the other is closed with a websocket close code and a
  reason that says why (the ending side's own close code, when it had one, is passed on);
- an idle limit: no byte in either direction for `idle_timeout` seconds ends the relay (checked four
  times per period by one watchdog, not per chunk).
Websocket close codes 4000-4999 are ours: 4000 + the HTTP status the situation would have had.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMsgType

HIGH_WATER = 1 << 20  # bytes a socket pipe buffers unread before it stops reading


@dataclass(frozen=True)
class Close:
    """How a websocket side is (or was) closed: RFC 6455 code and a reason (≤ 123 bytes of UTF-8)."""

    code: int
    reason: str

    def __post_init__(self) -> None:
        if len(self.reason.encode()) > 123:
            object.__setattr__(self, "reason", self.reason.encode()[:120].decode(errors="ignore") + "...")


ENDED = Close(WSCloseCode.OK, "closed")
GOING_AWAY = Close(WSCloseCode.GOING_AWAY, "relay shutting down")


def http_close(status: int, reason: str) -> Close:
    """The close code that stands for an HTTP status (4000 + status), as our pages and tunnels use them."""
    return Close(4000 + status, reason)


class PipeError(Exception):
    """A pipe can no longer carry data: the peer went away or broke the protocol (`close` says how)."""

    def __init__(self, pipe: Pipe, close: Close):
        super().__init__(f"{pipe.name}: {close.reason}")
        self.pipe = pipe
        self.close = close


class Pipe(Protocol):
    """One side of a relay."""

    name: str
    ended: Close  # how the peer ended it, once `recv` returned None

    async def recv(self) -> bytes | None:
        """The next chunk, or None once the peer has ended (see `ended`); may raise PipeError."""

    async def send(self, data: bytes) -> None:
        """Queue `data`, waiting while the transport is above its high-water mark; may raise PipeError."""

    async def close(self, close: Close) -> None:
        """End this side (idempotent); a websocket peer sees `close`."""


class _Ws(Protocol):
    """What aiohttp's server and client websockets have in common and we use."""

    @property
    def close_code(self) -> int | None: ...

    async def receive(self, timeout: float | None = None) -> Any: ...

    async def send_bytes(self, data: bytes, compress: int | None = None) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


class WsPipe:
    """A websocket carrying binary messages (the `binary` subprotocol): one message is one chunk."""

    def __init__(self, ws: _Ws, name: str):
        self.ws = ws
        self.name = name
        self.ended = ENDED

    async def recv(self) -> bytes | None:
        msg = await self.ws.receive()
        if msg.type is WSMsgType.BINARY:
            data: bytes = msg.data
            return data
        if msg.type is WSMsgType.TEXT:
            raise PipeError(self, Close(WSCloseCode.UNSUPPORTED_DATA, "binary frames only"))
        if msg.type is WSMsgType.ERROR:
            code = getattr(msg.data, "code", WSCloseCode.PROTOCOL_ERROR)
            raise PipeError(self, Close(code, f"websocket error: {msg.data}"))
        code = msg.data if msg.type is WSMsgType.CLOSE else self.ws.close_code
        self.ended = Close(code or WSCloseCode.OK, msg.extra or "closed by peer")
        return None

    async def send(self, data: bytes) -> None:
        try:
            await self.ws.send_bytes(data)
        except ConnectionError as e:
            raise PipeError(self, Close(WSCloseCode.ABNORMAL_CLOSURE, f"peer gone: {e}")) from e

    async def close(self, close: Close) -> None:
        await self.ws.close(code=close.code, message=close.reason.encode())


class SocketPipe(asyncio.Protocol):
    """A stream socket (unix or TCP) as a pipe: each chunk is the bytes object the transport read."""

    def __init__(self, name: str, high_water: int = HIGH_WATER):
        self.name = name
        self.ended = Close(WSCloseCode.OK, f"{name} closed")
        self._high = high_water
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._eof = False
        self._reading = True
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._transport: asyncio.Transport | None = None

    @classmethod
    async def open_unix(cls, path: str, name: str, high_water: int = HIGH_WATER) -> SocketPipe:
        """Connect to a unix socket (raises OSError as connect does)."""
        _, pipe = await asyncio.get_running_loop().create_unix_connection(lambda: cls(name, high_water), path)
        return pipe

    @classmethod
    def adopt(cls, transport: asyncio.Transport, name: str, high_water: int = HIGH_WATER) -> SocketPipe:
        """Take over a connected transport (an HTTP connection after its upgrade) as a pipe."""
        pipe = cls(name, high_water)
        transport.set_protocol(pipe)
        pipe.connection_made(transport)
        if not transport.is_reading():
            transport.resume_reading()
        return pipe

    async def head(self, limit: int = 16384) -> bytes:
        """What comes up to the first blank line (an HTTP head, at most `limit` bytes); the bytes after it
        stay queued for `recv`."""
        buf = b""
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > limit or (chunk := await self.recv()) is None:
                raise PipeError(self, Close(WSCloseCode.PROTOCOL_ERROR, "no HTTP head"))
            buf += chunk
        if rest := buf[end + 4:]:
            self._chunks.appendleft(rest)
            self._queued += len(rest)
        return buf[:end + 4]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._queued += len(data)
        if self._queued > self._high and self._reading and self._transport is not None:
            self._transport.pause_reading()
            self._reading = False
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return False  # close the transport: a console has no use for half-open sockets

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        if exc is not None:
            self.ended = Close(WSCloseCode.ABNORMAL_CLOSURE, f"{self.name} lost: {exc}")
        self._wake_reader()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None:
            if not self._writable.done():
                self._writable.set_result(None)
            self._writable = None

    def _wake_reader(self) -> None:
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(None)

    async def recv(self) -> bytes | None:
        while not self._chunks:
            if self._eof:
                return None
            self._readable = asyncio.get_running_loop().create_future()
            await self._readable
            self._readable = None
        data = self._chunks.popleft()
        self._queued -= len(data)
        if not self._reading and self._queued <= self._high // 2 and self._transport is not None:
            self._transport.resume_reading()
            self._reading = True
        return data

    async def send(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise PipeError(self, Close(WSCloseCode.ABNORMAL_CLOSURE, f"{self.name} gone"))
        self._transport.write(data)
        if self._writable is not None:
            await self._writable

    async def close(self, close: Close) -> None:
        if self._transport is not None:
            self._transport.close()


@dataclass(frozen=True)
class Outcome:
    """How a relay ended: which side ended it (None: the relay itself), the close both sides got, bytes
    moved from `a` to `b` and back, and its duration."""

    ended_by: str | None
    close: Close
    a_to_b: int
    b_to_a: int
    seconds: float


async def _pump(src: Pipe, dst: Pipe, moved: list[int], i: int) -> tuple[str, Close]:
    try:
        while (data := await src.recv()) is not None:
            await dst.send(data)
            moved[i] += len(data)
    except PipeError as e:
        return e.pipe.name, e.close
    return src.name, src.ended


async def _idle(moved: list[int], limit: float) -> tuple[str | None, Close]:
    loop = asyncio.get_running_loop()
    seen, quiet_since = -1, loop.time()
    while True:
        await asyncio.sleep(limit / 4)
        if moved[0] + moved[1] != seen:
            seen, quiet_since = moved[0] + moved[1], loop.time()
        elif loop.time() - quiet_since >= limit:
            return None, http_close(408, f"idle: no data for {limit:g} s")


async def relay(a: Pipe, b: Pipe, idle_timeout: float | None = None) -> Outcome:
    """Move bytes a → b and b → a until either ends, a pipe fails, or nothing moves for `idle_timeout` s.

    Both pipes are closed on return; the side that did not end gets the ending side's close. A cancelled
    relay closes both with 1001 (going away). A bug in a pipe propagates (it is not an ending)."""
    started = time.monotonic()
    moved = [0, 0]
    tasks: list[asyncio.Task[tuple[str | None, Close]]] = [
        asyncio.create_task(_pump(a, b, moved, 0), name=f"relay {a.name}->{b.name}"),
        asyncio.create_task(_pump(b, a, moved, 1), name=f"relay {b.name}->{a.name}"),
    ]
    if idle_timeout:
        tasks.append(asyncio.create_task(_idle(moved, idle_timeout), name="relay idle"))
    ended_by, close = None, GOING_AWAY
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        ended_by, close = next(iter(done)).result()
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        try:
            await a.close(close)
        finally:  # b is closed even when the relay is cancelled during a's closing handshake
            await b.close(close)
    return Outcome(ended_by, close, moved[0], moved[1], time.monotonic() - started)
