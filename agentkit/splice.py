"""A relay direction between two plain stream sockets that stays in the kernel: splice(2) from one socket into
a pipe and from the pipe into the other, so the bytes never come up to Python. It serves the agent's raw
console tunnel (the proxy's TCP connection ↔ the VM's console socket), where a graphical console's bulk
moves; with TLS on a socket there is nothing to splice (no kernel TLS here), and `relay.pump` moves it.

`pump` stands in for `agentkit.relay.pump` (`relay(a, b, pump=splice.pump)`) and keeps `relay`'s guarantees:
- flow control: a pipe of PIPE_SIZE bytes per direction; the source is read only while its pipe is empty,
  so while the pipe holds bytes the destination refused nothing is read: a stalled reader stalls the
  writer, with the kernel's socket buffers and one pipe in between;
- a clean close: the source's EOF or error, the destination's error, or either transport ended end the
  direction with the names and reasons `relay.pump` gives; bytes left in the pipe go to the destination's
  transport (unless that failed), which sends them before it closes, as with what it holds itself;
- the transports are left as they were (reading resumed), to be closed or handed back (aiohttp's connection
  after an upgrade). Bytes a source's transport read before (`SocketPipe.lent`) and those its destination's
  transport holds unsent go first.
The loop watches duplicates of the sockets' descriptors: it refuses to watch one a transport owns, and a
transport closed meanwhile cannot hand its number to another file while a splice still uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket

from aiohttp import WSCloseCode

from agentkit import relay
from agentkit.relay import Close, Pipe, SocketPipe

PIPE_SIZE = 1 << 20  # bytes a direction's pipe may hold (the default maximum for non-root users)
FLAGS = os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE


async def pump(src: Pipe, dst: Pipe, moved: list[int], i: int) -> tuple[str, Close]:
    """Move `src` → `dst` until one ends (`relay.pump`'s contract): spliced when both are plain sockets."""
    if not (isinstance(src, SocketPipe) and isinstance(dst, SocketPipe) and _plain(src) and _plain(dst)):
        return await relay.pump(src, dst, moved, i)
    way = _Splice(src, dst, moved, i)
    try:
        with src.lent() as unread, src.watch(way.end), dst.watch(way.end):
            if unread and dst.put(bytearray(unread), 0, len(unread)):
                moved[i] += len(unread)
            await _flushed(dst)
            way.start()
            return await way.done
    finally:
        way.close()


def _plain(pipe: SocketPipe) -> bool:
    """Whether the pipe's transport is the loop's own over a stream socket, without TLS, and still open."""
    t = pipe.transport
    if t is None or t.is_closing() or t.get_protocol() is not pipe or t.get_extra_info("ssl_object") is not None:
        return False
    sock = t.get_extra_info("socket")
    return sock is not None and sock.type == socket.SOCK_STREAM


async def _flushed(pipe: SocketPipe) -> None:
    """Until the pipe's transport holds no unsent byte (or is closing): those go before anything spliced."""
    t = pipe.transport
    assert t is not None
    low, high = t.get_write_buffer_limits()
    t.set_write_buffer_limits(high=0, low=0)  # paused at any unsent byte, resumed when all is sent
    try:
        while t.get_write_buffer_size() and not t.is_closing():
            pipe.flow.paused = True  # the transport may have paused the protocol before `pipe` was its protocol
            await pipe.flow.wait()
    finally:
        if not t.is_closing():
            t.set_write_buffer_limits(high=high, low=low)


class _Splice:
    """One direction: `src`'s socket → a pipe → `dst`'s socket, driven by the loop's readiness callbacks.
    Either the source is watched (the pipe is empty) or the destination (the pipe holds what it refused)."""

    def __init__(self, src: SocketPipe, dst: SocketPipe, moved: list[int], i: int):
        self.src, self.dst, self.moved, self.i = src, dst, moved, i
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[tuple[str, Close]] = self._loop.create_future()
        self._fds: list[int] = []
        self._in, self._out = self._dup(src), self._dup(dst)
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._fds += [self._pipe_r, self._pipe_w]
        with contextlib.suppress(PermissionError):  # past the user's pipe quota: the default size, slower
            fcntl.fcntl(self._pipe_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self._room = fcntl.fcntl(self._pipe_w, fcntl.F_GETPIPE_SZ)
        self._held = 0  # bytes in the pipe
        self._writing = False  # watching the destination, not the source
        self._refused = False  # the destination failed: what the pipe holds is not for it

    def _dup(self, pipe: SocketPipe) -> int:
        assert pipe.transport is not None
        fd = os.dup(pipe.transport.get_extra_info("socket").fileno())
        self._fds.append(fd)
        return fd

    def start(self) -> None:
        if not self.done.done():
            self._loop.add_reader(self._in, self._readable)

    def _readable(self) -> None:
        try:
            n = os.splice(self._in, self._pipe_w, self._room, flags=FLAGS)
        except BlockingIOError:
            return
        except OSError as e:
            self._lost(self.src, e)
            return
        if n == 0:
            self.end(self.src.name, self.src.ended)
            return
        self._held += n
        self._drain()

    def _drain(self) -> None:
        while self._held:
            try:
                n = os.splice(self._pipe_r, self._out, self._held, flags=FLAGS)
            except BlockingIOError:
                n = 0
            except OSError as e:
                self._lost(self.dst, e)
                return
            if n == 0:
                self._watch(writing=True)
                return
            self._held -= n
            self.moved[self.i] += n
        self._watch(writing=False)

    def _watch(self, writing: bool) -> None:
        if writing != self._writing:
            self._writing = writing
            if writing:
                self._loop.remove_reader(self._in)
                self._loop.add_writer(self._out, self._drain)
            else:
                self._loop.remove_writer(self._out)
                self._loop.add_reader(self._in, self._readable)

    def _lost(self, pipe: SocketPipe, e: OSError) -> None:
        pipe.ended = Close(WSCloseCode.ABNORMAL_CLOSURE, f"{pipe.name} lost: {e}")
        self._refused = pipe is self.dst
        self.end(pipe.name, pipe.ended)

    def end(self, name: str, close: Close) -> None:
        """Stop moving: `name` ended it, as `close` says."""
        if not self.done.done():
            self.done.set_result((name, close))
        self._unwatch()

    def _unwatch(self) -> None:
        self._loop.remove_reader(self._in)
        self._loop.remove_writer(self._out)

    def close(self) -> None:
        """Stop (ended or cancelled), hand what the pipe holds to the destination's transport, free the
        descriptors."""
        self._unwatch()
        rest = bytearray()
        with contextlib.suppress(BlockingIOError):
            while self._held and (chunk := os.read(self._pipe_r, self._held)):
                rest += chunk
                self._held -= len(chunk)
        if rest and not self._refused and self.dst.put(rest, 0, len(rest)):
            self.moved[self.i] += len(rest)
        for fd in self._fds:
            os.close(fd)
        self._fds = []
