"""The console path's core: relay bytes both ways between two pipes (a websocket, a socket) until one ends.

Used twice on every console connection: the console proxy relays browser websocket ↔ agent tunnel, the
agent relays tunnel ↔ the VM's console socket. What it guarantees:
- the bulk direction costs a read and a write per chunk and nothing else: a socket pipe whose peer can
  take chunks as they come (a socket, or a server websocket: a `Sink`) moves them from the transport's
  read callback, into a buffer it reuses, straight to the other transport, with no task or queue in
  between; a websocket frame's header is written into room left in front of the chunk, so a frame is
  one write and no copy. Other directions (the browser's websocket messages) move one chunk at a time;
- flow control both ways: a sink's transport pauses at any bytes it could not send at once (so it never
  copies a backlog) and the socket feeding it stops reading until they are gone; a pipe's `send` waits
  likewise; a socket pipe read by `recv` stops reading while `high_water` bytes wait unread, aiohttp's
  websocket reader does the same (its queue limit), so a slow reader slows the writer instead of
  filling memory;
- a clean close both ways: when one side ends, the other is closed with a websocket close code and a
  reason that says why (the ending side's own close code, when it had one, is passed on); a websocket
  peer that does not take its close within `CLOSE_TIMEOUT` (it reads nothing) is cut off;
- an idle limit: no byte in either direction for `idle_timeout` seconds ends the relay (checked four
  times per period by one watchdog, not per chunk).
Websocket close codes 4000-4999 are ours: 4000 + the HTTP status the situation would have had.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMsgType

HIGH_WATER = 1 << 20  # bytes a socket pipe buffers unread before it stops reading
READ_SIZE = 256 * 1024  # what one read of a socket pipe asks for by default (asyncio's own read size)
CLOSE_TIMEOUT = 10.0  # seconds a websocket peer has to take its close (as long as aiohttp waits for its answer)


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


class Flow:
    """A transport's write side as its protocol hears it: paused above its high-water mark until it is
    back under its low-water mark; what waits for it runs then."""

    def __init__(self) -> None:
        self.paused = False
        self._waiting: list[Callable[[], None]] = []

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        waiting, self._waiting = self._waiting, []
        for callback in waiting:
            callback()

    def on_resume(self, callback: Callable[[], None]) -> None:
        self._waiting.append(callback)

    async def wait(self) -> None:
        if self.paused:
            resumed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def wake() -> None:
                if not resumed.done():
                    resumed.set_result(None)
            self.on_resume(wake)
            await resumed


class Sink(Protocol):
    """A pipe's write side that takes chunks from a socket pipe's read callback (see `SocketPipe.forward`)."""

    name: str
    headroom: int  # bytes in front of each chunk the sink may write into (a frame header)
    flow: Flow

    def put(self, buf: bytearray, start: int, n: int) -> bool:
        """Write `buf[start:start + n]` on (the sink may use `buf[start - headroom:start]`); False when the
        sink can take nothing any more (it is closing)."""

    def holds(self) -> bool:
        """Whether its transport may still hold a buffer `put` wrote (it has unsent bytes, or is closing)."""


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

    def sink(self) -> contextlib.AbstractContextManager[Sink] | None:
        """This side as a sink while the block runs, or None when it cannot be one."""


@contextlib.contextmanager
def _no_backlog(transport: asyncio.WriteTransport) -> Iterator[None]:
    """While the block runs, the protocol is paused at (about) any unsent byte and resumed once all is sent:
    a writer waits instead of piling up a backlog that the transport copies. (A high-water mark of 1, not
    0: asyncio's TLS transport pauses at `size >= high`, and would never resume from 0.)"""
    low, high = transport.get_write_buffer_limits()
    transport.set_write_buffer_limits(high=1, low=0)
    try:
        yield
    finally:
        if not transport.is_closing():
            transport.set_write_buffer_limits(high, low)


class _Ws(Protocol):
    """What aiohttp's server and client websockets have in common and we use."""

    @property
    def close_code(self) -> int | None: ...

    @property
    def closed(self) -> bool: ...

    async def receive(self, timeout: float | None = None) -> Any: ...

    async def send_bytes(self, data: bytes, compress: int | None = None) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


class WsPipe:
    """A websocket carrying binary messages (the `binary` subprotocol): one message is one chunk. With the
    `transport` of a server websocket (frames unmasked) it is also a sink."""

    def __init__(self, ws: _Ws, name: str, transport: asyncio.Transport | None = None):
        self.ws = ws
        self.name = name
        self.ended = ENDED
        self.transport = transport

    async def recv(self) -> bytes | None:
        try:
            msg = await self.ws.receive()
        except ConnectionError as e:  # aiohttp answering a ping on a connection that is gone
            raise self._gone(e) from e
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
            raise self._gone(e) from e

    def _gone(self, e: ConnectionError) -> PipeError:
        return PipeError(self, Close(WSCloseCode.ABNORMAL_CLOSURE, f"peer gone: {e}"))

    async def close(self, close: Close, within: float | None = None) -> None:
        """Send `close` and wait for the peer's (aiohttp waits 10 s for it). A peer that reads nothing never gets
        it (it waits behind what the peer has not read), and aiohttp would wait for it to be sent for ever:
        `within` seconds on (`CLOSE_TIMEOUT` unless given), a connection that still holds bytes for its peer is
        cut off, so that a browser that stops reading keeps neither its session nor those bytes past its end."""
        if self.transport is not None:
            asyncio.get_running_loop().call_later(within or CLOSE_TIMEOUT, _cut_off, self.transport)
        await self.ws.close(code=close.code, message=close.reason.encode())

    def sink(self) -> contextlib.AbstractContextManager[Sink] | None:
        if self.transport is None or isinstance(self.transport.get_protocol(), asyncio.BufferedProtocol):
            return None
        return _frames(self, self.transport)


def _cut_off(transport: asyncio.Transport) -> None:
    """Abort a closing connection that could not send what it holds (one that has, is closed already)."""
    if transport.get_write_buffer_size():
        transport.abort()


def frame_header(n: int) -> bytes:
    """RFC 6455 5.2: a final, unmasked binary frame of `n` payload bytes."""
    if n < 126:
        return struct.pack("!BB", 0x82, n)
    if n < 1 << 16:
        return struct.pack("!BBH", 0x82, 126, n)
    return struct.pack("!BBQ", 0x82, 127, n)


class _Frames:
    """Binary frames written to a server websocket's transport, one write each. aiohttp writes its own
    frames (pings, the close) on the same transport, each in whole writes, so frames never interleave;
    none is written once the websocket is closing."""

    headroom = 10  # the longest header

    def __init__(self, pipe: WsPipe, transport: asyncio.Transport, flow: Flow):
        self.name = pipe.name
        self.flow = flow
        self._ws = pipe.ws
        self._transport = transport

    def put(self, buf: bytearray, start: int, n: int) -> bool:
        if self._ws.closed or self._transport.is_closing():
            return False
        header = frame_header(n)
        buf[start - len(header):start] = header
        self._transport.write(memoryview(buf)[start - len(header):start + n])
        return True

    def holds(self) -> bool:
        return self._transport.is_closing() or self._transport.get_write_buffer_size() > 0


class _Tap(asyncio.Protocol):
    """Stands in for a transport's protocol (aiohttp's) and passes everything on, to hear its write side."""

    def __init__(self, inner: asyncio.Protocol, flow: Flow):
        self.inner = inner
        self.flow = flow

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)
        self.flow.resume()

    def pause_writing(self) -> None:
        self.inner.pause_writing()
        self.flow.pause()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
        self.flow.resume()


@contextlib.contextmanager
def _frames(pipe: WsPipe, transport: asyncio.Transport) -> Iterator[Sink]:
    inner = transport.get_protocol()
    assert isinstance(inner, asyncio.Protocol)
    flow = Flow()
    transport.set_protocol(_Tap(inner, flow))
    try:
        with _no_backlog(transport):
            flow.paused = transport.get_write_buffer_size() > 0
            yield _Frames(pipe, transport, flow)
    finally:
        if not transport.is_closing():  # else the tap stays and passes connection_lost on
            transport.set_protocol(inner)


class SocketPipe(asyncio.BufferedProtocol):
    """A stream socket (unix or TCP) as a pipe and a sink. Read by `recv`, each chunk is a copy of what one
    read gave; by `forward`, reads go to a sink from a buffer that is reused once the sink's transport has
    sent everything (before, it may still hold it)."""

    headroom = 0

    def __init__(self, name: str, high_water: int = HIGH_WATER, read_size: int = READ_SIZE):
        self.name = name
        self.read_size = read_size
        self.ended = Close(WSCloseCode.OK, f"{name} closed")
        self.flow = Flow()
        self._high = high_water
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._eof = False
        self._reading = True
        self._readable: asyncio.Future[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._forward: _Forward | None = None
        self._previous: asyncio.BaseProtocol | None = None  # an adopted transport's protocol, to give it back to
        self._lost: tuple[Exception | None] | None = None  # how the connection ended, once it has

    @classmethod
    async def open_unix(cls, path: str, name: str, high_water: int = HIGH_WATER) -> SocketPipe:
        """Connect to a unix socket (raises OSError as connect does)."""
        _, pipe = await asyncio.get_running_loop().create_unix_connection(lambda: cls(name, high_water), path)
        return pipe

    @classmethod
    def adopt(cls, transport: asyncio.Transport, name: str, high_water: int = HIGH_WATER) -> SocketPipe:
        """Take over a connected transport (an HTTP connection after its upgrade) as a pipe, until `give_back`."""
        pipe = cls(name, high_water)
        pipe._previous = transport.get_protocol()
        transport.set_protocol(pipe)
        pipe.connection_made(transport)
        if not transport.is_reading():
            transport.resume_reading()
        return pipe

    def give_back(self) -> None:
        """Hand an adopted transport back to the protocol it had (aiohttp's, which finishes its request when the
        connection is lost): still open, it goes back; ended while adopted (the peer closed first, as a proxy
        does), its end is passed on, which the loop gave to this pipe alone: aiohttp kept the connection in
        its table, and the API edge (agentkit.edge) counted it as open, for ever."""
        previous, self._previous = self._previous, None
        assert previous is not None and self._transport is not None, "not an adopted transport"
        if self._lost is None:
            self._transport.set_protocol(previous)
        else:
            previous.connection_lost(self._lost[0])

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

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._forward is not None:
            return self._forward.buffer()
        if not self._buf:
            self._buf = bytearray(self.read_size)
        return memoryview(self._buf)

    def buffer_updated(self, nbytes: int) -> None:
        if self._forward is not None:
            self._forward.put(nbytes)
            return
        self._chunks.append(bytes(self._buf[:nbytes]))
        self._queued += nbytes
        if self._queued > self._high:
            self._pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._ended()
        return False  # close the transport: a console has no use for half-open sockets

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._lost = (exc,)
        if exc is not None:
            self.ended = Close(WSCloseCode.ABNORMAL_CLOSURE, f"{self.name} lost: {exc}")
        self._ended()
        self.flow.resume()

    def pause_writing(self) -> None:
        self.flow.pause()

    def resume_writing(self) -> None:
        self.flow.resume()

    def _ended(self) -> None:
        if self._forward is not None:
            self._forward.end(self.name, self.ended)
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(None)

    def _pause_reading(self) -> None:
        if self._reading and self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()
            self._reading = False

    def _resume_reading(self) -> None:
        if not self._reading and self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
            self._reading = True

    async def recv(self) -> bytes | None:
        while not self._chunks:
            if self._eof:
                return None
            self._readable = asyncio.get_running_loop().create_future()
            await self._readable
            self._readable = None
        data = self._chunks.popleft()
        self._queued -= len(data)
        if self._queued <= self._high // 2:
            self._resume_reading()
        return data

    async def send(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise PipeError(self, Close(WSCloseCode.ABNORMAL_CLOSURE, f"{self.name} gone"))
        self._transport.write(data)
        await self.flow.wait()

    async def close(self, close: Close) -> None:
        if self._transport is not None and not self._transport.is_closing():  # TLS transports break on a second
            self._transport.close()

    def sink(self) -> contextlib.AbstractContextManager[Sink] | None:
        return self._as_sink() if self._transport is not None else None

    @contextlib.contextmanager
    def _as_sink(self) -> Iterator[Sink]:
        assert self._transport is not None
        with _no_backlog(self._transport):
            yield self

    def put(self, buf: bytearray, start: int, n: int) -> bool:
        if self._transport is None or self._transport.is_closing():
            return False
        self._transport.write(memoryview(buf)[start:start + n])
        return True

    def holds(self) -> bool:
        return self._transport is None or self._transport.is_closing() or self._transport.get_write_buffer_size() > 0

    async def forward(self, sink: Sink, moved: list[int], i: int) -> tuple[str, Close]:
        """Move what this socket reads into `sink`, counting bytes in `moved[i]`, until the socket ends or the
        sink can take no more: which pipe ended it and how."""
        forward = _Forward(self, sink, moved, i)
        self._forward = forward
        try:
            while self._chunks and not forward.done.done():  # what `recv` left queued (after `head`)
                chunk = self._chunks.popleft()
                self._queued -= len(chunk)
                forward.put_copy(chunk)
            if self._eof:
                forward.end(self.name, self.ended)
            elif not forward.waiting:
                self._resume_reading()
            return await forward.done
        finally:
            self._forward = None
            self._resume_reading()


class _Forward:
    """One direction moving from a socket pipe's read callback into a sink."""

    def __init__(self, src: SocketPipe, sink: Sink, moved: list[int], i: int):
        self.src, self.sink, self.moved, self.i = src, sink, moved, i
        self.done: asyncio.Future[tuple[str, Close]] = asyncio.get_running_loop().create_future()
        self.waiting = False  # reading paused until the sink's flow resumes
        self._buf = bytearray(sink.headroom + src.read_size)

    def buffer(self) -> memoryview:
        if self.sink.holds():  # the last chunk may still be in there
            self._buf = bytearray(len(self._buf))
        return memoryview(self._buf)[self.sink.headroom:]

    def put(self, n: int) -> None:
        if not self.sink.put(self._buf, self.sink.headroom, n):
            self.end(self.sink.name, Close(WSCloseCode.ABNORMAL_CLOSURE, f"{self.sink.name} gone"))
            return
        self.moved[self.i] += n
        if self.sink.flow.paused and not self.waiting:
            self.waiting = True
            self.src._pause_reading()
            self.sink.flow.on_resume(self._resumed)

    def put_copy(self, chunk: bytes) -> None:
        """A chunk read before forwarding began."""
        self._buf = bytearray(self.sink.headroom) + chunk
        self.put(len(chunk))
        self._buf = bytearray(self.sink.headroom + self.src.read_size)

    def _resumed(self) -> None:
        self.waiting = False
        if self.src._forward is self and not self.done.done():
            self.src._resume_reading()

    def end(self, name: str, close: Close) -> None:
        if not self.done.done():
            self.done.set_result((name, close))
        self.src._pause_reading()
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
    """Move `src` → `dst` until one ends: from the read callback when `src` is a socket and `dst` a sink."""
    if isinstance(src, SocketPipe) and (sink := dst.sink()) is not None:
        with sink as s:
            return await src.forward(s, moved, i)
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


async def relay(a: Pipe, b: Pipe, idle_timeout: float | None = None, moved: list[int] | None = None) -> Outcome:
    """Move bytes a → b and b → a until either ends, a pipe fails, or nothing moves for `idle_timeout` s.

    Both pipes are closed on return; the side that did not end gets the ending side's close. A cancelled
    relay closes both with 1001 (going away). A bug in a pipe propagates (it is not an ending). `moved`
    (given as `[0, 0]`) counts the bytes a → b and b → a as they move, for a caller that reads them meanwhile."""
    started = time.monotonic()
    moved = [0, 0] if moved is None else moved
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
