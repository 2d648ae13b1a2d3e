"""An HTTP edge's connections (loopback sockets, several source addresses of 127/8): bounded, the flooding
source pays, half-open TLS handshakes cut off, and all of it on /metrics."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from agentkit import edge, httpmetrics, pki, tls
from agentkit.edge import Edge, EdgeSite
from agentkit.metrics import Registry

ATTACKER, CLIENT = "127.0.0.2", "127.0.0.3"


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def serve(limit: int, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[tuple[int, Registry]]:
    app = web.Application(middlewares=[httpmetrics.middleware])
    registry = Registry()
    app[httpmetrics.HTTP] = httpmetrics.HttpMetrics(registry)
    app.router.add_get("/", hello)
    gate = Edge(limit, ssl_context)
    gate.register(registry)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    await EdgeSite(runner, sock, gate).start()
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
        assert series(registry, "hoststack_http_connections_closed_total")["handshake_failed"] == 1
        assert series(registry, "hoststack_http_connections")["open"] == 0
        writer.close()
        async with aiohttp.ClientSession() as client:  # a client that speaks TLS is served as before
            async with client.get(f"https://127.0.0.1:{port}/", ssl=client_ctx) as r:
                assert await r.text() == "hello"
