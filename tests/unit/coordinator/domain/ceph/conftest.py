"""Stand-in cephagents on loopback addresses (127.0.0.x, one port for all, as the coordinator expects)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from agentkit.errors import error_body

from .standin import FSID, HEALTH, cluster

StandIn = Callable[..., Awaitable[int]]


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    """stand_in(host, port=0, fsid=FSID, delete_image=None, health=None, cluster_answer=None): start a
    stand-in cephagent; its port.

    It answers `/health` with `health` (else a cephagent's) and `/v1/cluster` with `cluster_answer` (else
    the cluster `fsid`), and `DELETE /v1/images/...` with the error body `delete_image` (status, code) when
    given, else 204.
    """
    runners: list[web.AppRunner] = []

    async def start(host: str, port: int = 0, fsid: str = FSID, delete_image: tuple[int, str] | None = None,
                    health: object = None, cluster_answer: object = None) -> int:
        async def health_answer(_: web.Request) -> web.Response:
            return web.json_response(HEALTH | {"fsid": fsid} if health is None else health)

        async def info(_: web.Request) -> web.Response:
            return web.json_response(cluster(fsid) if cluster_answer is None else cluster_answer)

        async def delete(_: web.Request) -> web.Response:
            if delete_image is None:
                return web.Response(status=204)
            status, code = delete_image
            return web.json_response(error_body(code, f"{code} at {host}", "name"), status=status)

        app = web.Application()
        app.router.add_get("/health", health_answer)
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
