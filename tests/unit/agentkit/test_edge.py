"""An HTTP edge's connections (loopback sockets, several source addresses of 127/8): bounded, the flooding
source pays, half-open TLS handshakes cut off, and the table on /metrics."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import uvloop
from aiohttp import web

from agentkit import edge, httpmetrics, pki, tls
from agentkit.consoles import RAW_UPGRADE, issue_ticket
from agentkit.edge import Edge, EdgeSite
from agentkit.metrics import Registry
from kvmagent.consoles import ConsoleTunnel

ATTACKER, CLIENT = "127.0.0.2", "127.0.0.3"


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_policy(request):
    """Each test on both loops: the coordinator serves on uvloop, whose transports differ from asyncio's."""
    return uvloop.EventLoopPolicy() if request.param == "uvloop" else asyncio.DefaultEventLoopPolicy()


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def serve(limit: int, ssl_context: ssl.SSLContext | None = None,
                routes: list[web.RouteDef] = ()) -> AsyncIterator[tuple[int, Registry]]:  # type: ignore[assignment]
    app = web.Application(middlewares=[httpmetrics.middleware])
    registry = Registry()
    httpmetrics.install(app, registry)
    app.router.add_get("/", hello)
    app.add_routes(routes)
    gate = Edge(limit)
    gate.register(registry)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    await EdgeSite(runner, sock, gate, ssl_context).start()
    try:
        yield sock.getsockname()[1], registry
    finally:
        await runner.cleanup()
        sock.close()


def series(registry: Registry, name: str) -> dict[str, float]:
    """`name`'s values by its one label's value."""
    out = {}
    for line in registry.render().splitlines():
        if line.startswith(name + "{"):
            label, value = line[len(name) + 1:].split("} ")
            out[label.split('"')[1]] = float(value)
    return out


async def connect(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def test_a_source_that_holds_every_connection_loses_its_idlest_and_others_are_served():
    async for port, registry in serve(limit=4):
        held = [await connect(port, ATTACKER) for _ in range(4)]  # silent: no request, ever
        await asyncio.sleep(0.05)
        assert series(registry, "hoststack_http_connections") == {"open": 4, "limit": 4}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(CLIENT, 0))) as client:
            async with client.get(f"http://127.0.0.1:{port}/") as r:
                assert (r.status, await r.text()) == (200, "hello")
        first, _ = held[0]
        assert await asyncio.wait_for(first.read(), 5) == b""  # the attacker's oldest made room
        assert series(registry, "hoststack_http_connections_closed_total")["evicted"] == 1
        for _, writer in held:
            writer.close()


async def test_a_client_that_never_finishes_its_tls_handshake_is_cut_off(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path):
    monkeypatch.setattr(edge, "HANDSHAKE_TIMEOUT", 0.2)
    issuer = pki.Issuer(*pki.make_ca())
    certs, key = issuer.issue_pair("api", ["127.0.0.1"], days=1)
    pki.write_certs(tmp_path / "api.pem", certs)
    pki.write_key(tmp_path / "api.key", key)
    pki.write_certs(tmp_path / "ca.pem", [issuer.cert])
    server_ctx = tls.server_context(tmp_path / "api.pem", tmp_path / "api.key")
    client_ctx = tls.client_context(tmp_path / "ca.pem")
    async for port, registry in serve(limit=16, ssl_context=server_ctx):
        reader, writer = await connect(port, ATTACKER)  # TCP only: no ClientHello
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert series(registry, "hoststack_http_connections")["open"] == 0  # in the table only once up
        writer.close()
        async with aiohttp.ClientSession() as client:  # a client that speaks TLS is served as before
            async with client.get(f"https://127.0.0.1:{port}/", ssl=client_ctx) as r:
                assert await r.text() == "hello"


@pytest.mark.parametrize("event_loop_policy", [asyncio.DefaultEventLoopPolicy()], ids=["asyncio"])  # the kvmagent's
async def test_a_console_tunnel_that_took_its_connection_over_gives_it_back_to_the_table(tmp_path: Path):
    """The kvmagent's raw console tunnel replaces the connection's protocol while it relays and puts back the
    one it found (the table's, in front of aiohttp's): the connection leaves the table when it ends."""
    key, vnc = b"k" * 32, tmp_path / "vnc.sock"
    console = await asyncio.start_unix_server(lambda r, w: w.write(b"RFB 003.008\n"), str(vnc))
    tunnel = ConsoleTunnel(lambda: key, lambda vm, kind: vnc)
    ticket = issue_ticket(key, "vm1", "vnc", int(time.time()) + 60)
    async for port, registry in serve(limit=16, routes=tunnel.routes()):
        reader, writer = await connect(port, CLIENT)
        writer.write(f"GET /v1/consoles/vm1/vnc HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                     f"Upgrade: {RAW_UPGRADE}\r\nAuthorization: Ticket {ticket}\r\n\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        assert await reader.readexactly(12) == b"RFB 003.008\n"
        assert series(registry, "hoststack_http_connections")["open"] == 1
        writer.close()
        for _ in range(100):
            if series(registry, "hoststack_http_connections")["open"] == 0:
                break
            await asyncio.sleep(0.02)
        assert series(registry, "hoststack_http_connections")["open"] == 0
    console.close()
