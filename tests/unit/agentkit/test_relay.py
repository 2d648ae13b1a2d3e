"""The relay core between a websocket (aiohttp, on loopback) and a stream socket (a socketpair end as the
"console"): bytes both ways in order, the close of one side reaches the other with a reason, idle limits,
and flow control that bounds what piles up when a reader stalls, in both directions."""

from __future__ import annotations

import asyncio
import socket
import struct

import aiohttp
import pytest
from aiohttp import web

from agentkit import relay as relay_module
from agentkit.relay import Flow, Outcome, SocketPipe, WsPipe, relay

CHUNK = b"x" * 65536


class Console:
    """The far end of the relay's socket, driven by the test (non-blocking)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.setblocking(False)

    async def recv(self, n: int = 1 << 20, timeout: float = 5) -> bytes:
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, n), timeout)

    async def closed(self) -> bool:
        """Whether the relay closed its side (with bytes it had not read, a unix socket's close is a reset)."""
        try:
            return await self.recv() == b""
        except ConnectionResetError:
            return True

    def fill(self) -> int:
        """Write until the socket refuses more right now; how much went."""
        sent = 0
        try:
            while True:
                sent += self.sock.send(CHUNK)
        except BlockingIOError:
            return sent

    async def fill_until_stalled(self) -> int:
        """Write until nothing more goes for five looks in a row (nobody reads the far side); how much went."""
        sent, stalled, still = 0, -1, 0
        for _ in range(200):
            sent += self.fill()
            still = still + 1 if sent == stalled else 0
            if still == 5:
                return sent
            stalled = sent
            await asyncio.sleep(0.05)
        raise AssertionError("the console could still write although nobody reads")


@pytest.fixture(params=["frames", "messages"])
def framing(request):
    """How the console's bytes reach the browser: written as frames from the socket's reads (the websocket
    pipe has its transport, as in the proxy), or sent as messages one chunk at a time."""
    return request.param


@pytest.fixture
async def served(request, framing):
    """(the relay's port, console end, the relay's outcome future) for one websocket; an indirect parameter
    is the idle limit."""
    idle = getattr(request, "param", None)
    theirs, ours = socket.socketpair()
    outcome: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("binary",))
        await ws.prepare(request)
        _, pipe = await asyncio.get_running_loop().create_unix_connection(lambda: SocketPipe("console"), sock=ours)
        transport = request.transport if framing == "frames" else None
        outcome.set_result(await relay(WsPipe(ws, "browser", transport), pipe, idle_timeout=idle))
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)  # as run_app: a peer that goes away does not cancel the handler
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield port, Console(theirs), outcome
    theirs.close()  # first: a relay stalled on the console then ends too
    await runner.cleanup()


@pytest.fixture
async def pair(served):
    """(client websocket, console end, the relay's outcome future); an indirect parameter is the idle limit."""
    port, console, outcome = served
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"http://127.0.0.1:{port}/ws", protocols=("binary",))
        yield ws, console, outcome
        console.sock.close()  # first: a relay stalled on the console then ends too
        await ws.close()


class RawBrowser:
    """A websocket client on a bare socket that reads only what the test asks for (its receive buffer
    small, so the relay soon has bytes it cannot send), and sends frames as they are given."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    @classmethod
    async def connect(cls, port: int) -> RawBrowser:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                                b"Sec-WebSocket-Protocol: binary\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += await loop.sock_recv(sock, 1)  # the head alone: nothing after it is read
        assert head.startswith(b"HTTP/1.1 101 ")
        return cls(sock)

    async def ping_until_stalled(self) -> None:
        """Masked pings (RFC 6455 5.5.2) until none goes for five looks in a row: the relay stopped reading."""
        pings, still = (bytes([0x89, 0x84]) + bytes(4) + b"ping") * 64, 0
        while still < 5:
            try:
                while True:
                    self.sock.send(pings)
                    still = 0
            except BlockingIOError:
                still += 1
            await asyncio.sleep(0.05)

    async def read_to_end(self) -> int:
        """Read until the connection ends (5 s at most): how much came."""
        got, loop = 0, asyncio.get_running_loop()
        try:
            while chunk := await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 20), 5):
                got += len(chunk)
        except ConnectionResetError:
            pass
        return got

    def reset(self) -> None:
        """Go away with a reset, as a browser's machine does that drops off the network and comes back."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


async def test_bytes_move_both_ways_and_a_closing_console_closes_the_browser(pair):
    ws, console, outcome = pair
    await ws.send_bytes(b"key press")
    assert await console.recv() == b"key press"
    console.sock.send(b"screen update")
    msg = await ws.receive()
    assert msg.type is aiohttp.WSMsgType.BINARY and msg.data == b"screen update"
    console.sock.close()
    msg = await ws.receive()
    assert (msg.type, msg.data, msg.extra) == (aiohttp.WSMsgType.CLOSE, 1000, "console closed")
    done = await outcome
    assert (done.ended_by, done.a_to_b, done.b_to_a) == ("console", 9, 13)


async def test_a_closing_browser_closes_the_console(pair):
    ws, console, outcome = pair
    await ws.close()
    assert await console.recv() == b""  # EOF
    assert (await outcome).ended_by == "browser"


async def test_text_frames_are_refused(pair):
    ws, _, _ = pair
    await ws.send_str("not binary")
    msg = await ws.receive()
    assert (msg.data, msg.extra) == (1003, "binary frames only")


async def test_a_browser_that_pings_without_reading_and_goes_away_ends_its_session(served):
    """Its pongs wait behind the console's bytes it never read; gone meanwhile, it ended the relay with a
    traceback (aiohttp's ConnectionResetError, taken for a bug) and left the console open."""
    port, console, outcome = served
    browser = await RawBrowser.connect(port)
    await console.fill_until_stalled()
    await browser.ping_until_stalled()
    browser.reset()
    done = await asyncio.wait_for(outcome, 5)
    assert (done.ended_by, done.close.code) == ("browser", 1006)
    assert await console.closed()


@pytest.mark.parametrize(("served", "framing"), [(1, "frames")], indirect=True)
async def test_a_browser_that_reads_nothing_is_cut_off_when_its_session_ends(served, monkeypatch):
    """Its close waits behind the console's bytes it never read: the relay waited for it to be sent for ever,
    holding the session, the console and those bytes; now the connection is aborted `CLOSE_TIMEOUT` on (a
    server websocket, which has its transport: the proxy's browsers, the agent's proxies)."""
    monkeypatch.setattr(relay_module, "CLOSE_TIMEOUT", 0.5)
    port, console, outcome = served
    browser = await RawBrowser.connect(port)
    sent = await console.fill_until_stalled()
    done = await asyncio.wait_for(outcome, 5)  # idle: nothing moves while the browser reads nothing
    assert (done.ended_by, done.close.reason) == (None, "idle: no data for 1 s")
    assert await console.closed()
    assert await browser.read_to_end() < sent  # what the kernel held for it, then the reset; no close frame


@pytest.mark.parametrize("served", [0.5], indirect=True)
async def test_idle_limit(pair):
    ws, _, outcome = pair
    msg = await asyncio.wait_for(ws.receive(), 3)
    assert (msg.data, msg.extra) == (4408, "idle: no data for 0.5 s")
    assert (await outcome).ended_by is None


async def test_a_stalled_browser_stalls_the_console_and_loses_nothing(pair):
    ws, console, _ = pair
    sent = await console.fill_until_stalled()  # the browser reads nothing
    assert sent < 32 << 20  # kernel buffers + the relay's high-water marks, not everything
    got = 0
    while got < sent:
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert set(msg.data) == {ord("x")}
        got += len(msg.data)
    assert got == sent


async def test_a_stalled_console_stalls_the_browser(pair):
    ws, console, _ = pair
    sent = 0

    async def send_forever() -> None:
        nonlocal sent
        while True:
            await ws.send_bytes(CHUNK)
            sent += len(CHUNK)

    sender = asyncio.create_task(send_forever())
    stalled, still = -1, 0
    for _ in range(200):
        await asyncio.sleep(0.05)
        still = still + 1 if sent == stalled else 0
        if still == 5:
            break
        stalled = sent
    assert still == 5, "the browser could still send although the console reads nothing"
    assert stalled < 32 << 20
    got = 0
    while got < stalled:
        got += len(await console.recv())
    sender.cancel()
    assert got >= stalled


async def test_socket_to_socket_a_stalled_reader_stalls_the_writer():
    """The raw tunnel's relay (an adopted connection ↔ the console socket): a side that reads nothing soon
    stops the other side's writes, with bounded buffers, and loses nothing."""
    loop = asyncio.get_running_loop()
    proxy_theirs, proxy_ours = socket.socketpair()
    console_theirs, console_ours = socket.socketpair()
    transport, _ = await loop.create_unix_connection(asyncio.Protocol, sock=proxy_ours)
    proxy = SocketPipe.adopt(transport, "proxy")
    _, console_pipe = await loop.create_unix_connection(lambda: SocketPipe("console"), sock=console_ours)
    relaying = asyncio.create_task(relay(proxy, console_pipe))
    console, reader = Console(console_theirs), Console(proxy_theirs)
    sent = await console.fill_until_stalled()
    assert sent < 32 << 20
    got = 0
    while got < sent:
        got += len(await reader.recv())
    assert got == sent
    console.sock.close()
    assert (await asyncio.wait_for(relaying, 5)).ended_by == "console"
    reader.sock.close()


async def test_bytes_read_with_the_head_go_first():
    """The raw tunnel's client reads the agent's 101 with `head`; what came with it (the console's first
    bytes) is relayed before anything read later."""
    loop = asyncio.get_running_loop()
    tunnel_theirs, tunnel_ours = socket.socketpair()
    browser_theirs, browser_ours = socket.socketpair()
    _, tunnel = await loop.create_unix_connection(lambda: SocketPipe("tunnel"), sock=tunnel_ours)
    _, browser = await loop.create_unix_connection(lambda: SocketPipe("browser"), sock=browser_ours)
    tunnel_theirs.sendall(b"HTTP/1.1 101 Switching Protocols\r\n\r\nRFB 003.008\n")
    assert await tunnel.head() == b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
    relaying = asyncio.create_task(relay(tunnel, browser))
    reader = Console(browser_theirs)
    assert await reader.recv() == b"RFB 003.008\n"
    tunnel_theirs.sendall(b"later")
    assert await reader.recv() == b"later"
    tunnel_theirs.close()
    assert (await asyncio.wait_for(relaying, 5)).ended_by == "tunnel"
    reader.sock.close()


class Chunks:
    """A sink that keeps the chunks it is given (the proxy's browser websocket, as the tunnel's reads see it)."""

    name = "browser"
    headroom = 10

    def __init__(self) -> None:
        self.flow = Flow()
        self.chunks: list[bytes] = []

    def put(self, buf: bytearray, start: int, n: int) -> bool:
        self.chunks.append(bytes(buf[start:start + n]))
        return True

    def holds(self) -> bool:
        return False


async def test_a_socket_pipe_reads_at_most_its_read_size():
    """The proxy reads its raw tunnel in bigger reads than the default: each read, taken by `recv` or
    forwarded to a sink, is at most the pipe's own size."""
    loop = asyncio.get_running_loop()
    theirs, ours = socket.socketpair()
    _, pipe = await loop.create_unix_connection(lambda: SocketPipe("tunnel", read_size=1000), sock=ours)
    theirs.sendall(b"a" * 2500)
    got = [await pipe.recv()]
    while sum(map(len, got)) < 2500:
        got.append(await pipe.recv())
    assert max(map(len, got)) <= 1000 and b"".join(got) == b"a" * 2500
    sink, moved = Chunks(), [0]
    forwarding = asyncio.create_task(pipe.forward(sink, moved, 0))
    theirs.sendall(b"b" * 2500)
    theirs.close()
    assert await asyncio.wait_for(forwarding, 5) == ("tunnel", pipe.ended)
    assert max(map(len, sink.chunks)) <= 1000 and b"".join(sink.chunks) == b"b" * 2500 and moved == [2500]
