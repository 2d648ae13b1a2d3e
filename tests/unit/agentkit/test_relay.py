"""The relay core between a websocket (aiohttp, on loopback) and a stream socket (a socketpair end as the
"console"): bytes both ways in order, the close of one side reaches the other with a reason, idle limits,
and flow control that bounds what piles up when a reader stalls, in both directions."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web

from agentkit.relay import Flow, Outcome, SocketPipe, WsPipe, relay

CHUNK = b"x" * 65536


class Console:
    """The far end of the relay's socket, driven by the test (non-blocking)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.setblocking(False)

    async def recv(self, n: int = 1 << 20, timeout: float = 5) -> bytes:
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, n), timeout)

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
async def pair(request, framing):
    """(client websocket, console end, the relay's outcome future); an indirect parameter is the idle limit."""
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
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"http://127.0.0.1:{port}/ws", protocols=("binary",))
        yield ws, Console(theirs), outcome
        theirs.close()  # first: a relay stalled on the console then ends too
        await ws.close()
    await runner.cleanup()


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


@pytest.mark.parametrize("pair", [0.5], indirect=True)
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
