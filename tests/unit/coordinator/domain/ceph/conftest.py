"""Stand-in cephagents on loopback addresses (127.0.0.x, one port for all, as the coordinator expects)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from agentkit.errors import error_body

from .standin import FSID, cluster

StandIn = Callable[..., Awaitable[int]]


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    """stand_in(host, port=0, fsid=FSID, delete_image=None): start a stand-in cephagent; its port.

    It answers `/health` and `/v1/cluster` for `fsid`, and `DELETE /v1/images/...` with the error body
    `delete_image` (status, code) when given, else 204.
    """
    runners: list[web.AppRunner] = []

    async def start(host: str, port: int = 0, fsid: str = FSID, delete_image: tuple[int, str] | None = None) -> int:
        async def health(_: web.Request) -> web.Response:
            return web.json_response({"status": "ok", "fsid": fsid, "version": "9.9"})

        async def info(_: web.Request) -> web.Response:
            return web.json_response(cluster(fsid))

        async def delete(_: web.Request) -> web.Response:
            if delete_image is None:
                return web.Response(status=204)
            status, code = delete_image
            return web.json_response(error_body(code, f"{code} at {host}", "name"), status=status)

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_get("/v1/cluster", info)
        app.router.add_delete("/v1/images/{pool}/{name}", delete)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        runners.append(runner)
        return int(runner.addresses[0][1])

    yield start
    for r in runners:
        await r.cleanup()
