"""The spliced relay direction between two plain sockets, as the raw console tunnel uses it (an adopted
connection ↔ the console socket): bytes both ways in order, through splice(2) and not Python; the same
outcomes as `relay.pump` (who ended it, the close, the counts); bounded buffers when a reader stalls, in
both directions; what the transports read or hold before goes first; the idle limit; a transport closed
meanwhile ends it; and no descriptor is left behind. The "proxy" side runs over TCP on loopback and over a
unix socketpair."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from agentkit import relay as relay_
from agentkit import splice
from agentkit.relay import Outcome, SocketPipe, relay

CHUNK = b"x" * 65536


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        theirs = socket.create_connection(server.getsockname())
        ours, _ = server.accept()
    return theirs, ours


class End:
    """A far end of the relay, driven by the test (non-blocking)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.setblocking(False)

    async def recv(self, n: int = 1 << 20, timeout: float = 5) -> bytes:
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, n), timeout)

    async def recv_exactly(self, n: int) -> bytes:
        got = bytearray()
        while len(got) < n:
            chunk = await self.recv(n - len(got))
            assert chunk, f"EOF after {len(got)} of {n} bytes"
            got += chunk
        return bytes(got)

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def fill_until_stalled(self) -> int:
        """Write until nothing more goes for five looks in a row (nobody reads the far side); how much went."""
        sent, stalled, still = 0, -1, 0
        for _ in range(200):
            try:
                while True:
                    sent += self.sock.send(CHUNK)
            except BlockingIOError:
                pass
            still = still + 1 if sent == stalled else 0
            if still == 5:
                return sent
            stalled = sent
            await asyncio.sleep(0.05)
        raise AssertionError("could still write although nobody reads")


@dataclass
class Tunnel:
    proxy: End  # the proxy's end of the tunnel connection
    console: End  # the console server's end
    proxy_pipe: SocketPipe
    console_pipe: SocketPipe
    spliced: list[int]  # os.splice calls so far

    def start(self, pump: relay_.Pump = splice.pump, idle: float | None = None) -> asyncio.Task[Outcome]:
        return asyncio.create_task(relay(self.proxy_pipe, self.console_pipe, idle, pump))


@pytest.fixture(params=["tcp", "unix"])
async def tunnel(request, monkeypatch) -> AsyncIterator[Tunnel]:
    loop = asyncio.get_running_loop()
    proxy_theirs, proxy_ours = tcp_pair() if request.param == "tcp" else socket.socketpair()
    console_theirs, console_ours = socket.socketpair()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=proxy_ours)
    proxy = SocketPipe.adopt(transport, "proxy")  # as the agent takes the upgraded connection
    _, console = await loop.create_unix_connection(lambda: SocketPipe("console"), sock=console_ours)
    calls = [0]
    real = os.splice

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)
    monkeypatch.setattr(os, "splice", counting)
    yield Tunnel(End(proxy_theirs), End(console_theirs), proxy, console, calls)
    proxy_theirs.close()
    console_theirs.close()


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("pump", [relay_.pump, splice.pump], ids=["relay", "splice"])
async def test_bytes_move_both_ways_with_the_outcomes_of_the_relay(tunnel, pump):
    """Spliced or not, the same bytes, counts and ending: the console closing ends it, named."""
    relaying = tunnel.start(pump)
    await tunnel.proxy.send(b"key press")
    assert await tunnel.console.recv_exactly(9) == b"key press"
    screen = os.urandom(3 << 20)
    sending = asyncio.create_task(tunnel.console.send(screen))
    assert await tunnel.proxy.recv_exactly(len(screen)) == screen
    await sending
    tunnel.console.sock.close()
    assert await tunnel.proxy.recv() == b""  # EOF
    done = await asyncio.wait_for(relaying, 5)
    assert (done.ended_by, done.close.code, done.close.reason) == ("console", 1000, "console closed")
    assert (done.a_to_b, done.b_to_a) == (9, len(screen))
    assert (tunnel.spliced[0] > 0) == (pump is splice.pump)


async def test_the_proxy_closing_ends_it_and_closes_the_console(tunnel):
    fds = open_fds()
    relaying = tunnel.start()
    await tunnel.console.send(b"RFB 003.008\n")
    assert await tunnel.proxy.recv_exactly(12) == b"RFB 003.008\n"
    tunnel.proxy.sock.close()
    assert await tunnel.console.recv() == b""
    done = await asyncio.wait_for(relaying, 5)
    assert (done.ended_by, done.close.reason, done.b_to_a) == ("proxy", "proxy closed", 12)
    assert tunnel.spliced[0] > 0
    assert open_fds() <= fds


async def test_a_reset_is_named(tunnel):
    relaying = tunnel.start()
    await tunnel.console.send(b"x")
    await tunnel.proxy.recv_exactly(1)
    tunnel.proxy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # close sends RST
    tunnel.proxy.sock.close()
    done = await asyncio.wait_for(relaying, 5)
    assert done.ended_by == "proxy" and done.close.reason in ("proxy closed", "proxy lost: [Errno 104] "
                                                              "Connection reset by peer")


async def test_a_stalled_proxy_stalls_the_console_and_loses_nothing(tunnel):
    relaying = tunnel.start()
    sent = await tunnel.console.fill_until_stalled()  # the proxy reads nothing
    assert sent < 32 << 20  # kernel buffers + one pipe, not everything
    assert set(await tunnel.proxy.recv_exactly(sent)) == {ord("x")}
    tunnel.console.sock.close()
    assert (await asyncio.wait_for(relaying, 5)).b_to_a == sent


async def test_a_stalled_console_stalls_the_proxy_and_loses_nothing(tunnel):
    relaying = tunnel.start()
    sent = await tunnel.proxy.fill_until_stalled()
    assert sent < 32 << 20
    assert set(await tunnel.console.recv_exactly(sent)) == {ord("x")}
    tunnel.proxy.sock.close()
    assert (await asyncio.wait_for(relaying, 5)).a_to_b == sent


async def test_bytes_read_or_held_before_go_first(tunnel, monkeypatch):
    """What the proxy's transport read before the relay began, and what the console's transport holds
    unsent (its reader is slow), reach the far ends before anything spliced: no splice into the console
    socket is tried while its transport holds bytes."""
    early: list[int] = []
    counting = os.splice

    def checking(src: int, dst: int, *args, **kwargs):
        if stat.S_ISSOCK(os.fstat(dst).st_mode) and tunnel.console_pipe.transport.get_write_buffer_size():
            early.append(dst)
        return counting(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "splice", checking)
    await tunnel.proxy.send(b"early")
    while tunnel.proxy_pipe._queued < 5:
        await asyncio.sleep(0.01)
    held = os.urandom(8 << 20)
    assert tunnel.console_pipe.transport is not None
    tunnel.console_pipe.transport.write(held)  # more than the socket takes: the transport holds the rest
    assert tunnel.console_pipe.transport.get_write_buffer_size() > 0
    relaying = tunnel.start()
    while tunnel.proxy_pipe.transport.is_reading():  # until the splice reads the proxy's socket
        await asyncio.sleep(0.01)
    await tunnel.proxy.send(b" and later")
    assert await tunnel.console.recv_exactly(len(held) + 15) == held + b"early and later"
    assert early == [] and tunnel.spliced[0] > 0
    tunnel.console.sock.close()
    assert (await asyncio.wait_for(relaying, 5)).a_to_b == 15


async def test_idle_limit(tunnel):
    done = await asyncio.wait_for(tunnel.start(idle=0.4), 3)
    assert (done.ended_by, done.close.code, done.close.reason) == (None, 4408, "idle: no data for 0.4 s")
    assert await tunnel.proxy.recv() == b""


async def test_a_transport_closed_meanwhile_ends_it(tunnel):
    """Someone else closes a transport (aiohttp shutting down): the splice notices, though its descriptors
    keep the socket open."""
    relaying = tunnel.start()
    await asyncio.sleep(0.05)
    assert tunnel.proxy_pipe.transport is not None
    tunnel.proxy_pipe.transport.close()
    done = await asyncio.wait_for(relaying, 5)
    assert (done.ended_by, done.close.reason) == ("proxy", "proxy closed")
    assert await tunnel.console.recv() == b""


async def test_cancelled_it_closes_both_and_frees_its_descriptors(tunnel):
    fds = open_fds()
    relaying = tunnel.start()
    await tunnel.console.send(b"x" * 1000)
    await tunnel.proxy.recv_exactly(1000)
    relaying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await relaying
    assert await tunnel.proxy.recv() == b"" and await tunnel.console.recv() == b""
    assert open_fds() <= fds
