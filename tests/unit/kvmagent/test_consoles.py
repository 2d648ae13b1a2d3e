"""The agent's raw console tunnel on a real aiohttp server (loopback) and a unix socket standing for the VM's
console: a session the proxy ends leaves nothing behind in the server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp import web

from agentkit.consoles import RAW_UPGRADE, issue_ticket
from kvmagent.consoles import ConsoleTunnel

KEY = b"k" * 32


async def test_sessions_the_proxy_closed_are_not_held_by_the_server(tmp_path: Path):
    vnc = tmp_path / "vnc.sock"
    console = await asyncio.start_unix_server(lambda r, w: w.write(b"RFB 003.008\n"), str(vnc))
    app = web.Application()
    app.add_routes(ConsoleTunnel(lambda: KEY, lambda vm, kind: vnc).routes())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    ticket = issue_ticket(KEY, "vm1", "vnc", int(time.time()) + 60)
    try:
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /v1/consoles/vm1/vnc HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                         f"Upgrade: {RAW_UPGRADE}\r\nAuthorization: Ticket {ticket}\r\n\r\n".encode())
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            assert await reader.readexactly(12) == b"RFB 003.008\n"
            writer.close()  # the proxy ends the session: its browser left
        assert runner.server is not None
        for _ in range(100):
            if not runner.server.connections:
                break
            await asyncio.sleep(0.02)
        assert runner.server.connections == []  # each one's request finished, its handler let go
    finally:
        await runner.cleanup()
        console.close()
