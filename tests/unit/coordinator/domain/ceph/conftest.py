"""Stand-in cephagents on loopback addresses (127.0.0.x, one port for all, as the coordinator expects)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from agentkit.errors import error_body

from .standin import FSID, HEALTH, cluster

StandIn = Callable[..., Awaitable[int]]


@pytest.fixture
def agent_calls() -> list[tuple[str, str, str]]:
    """What the stand-in agents were asked, in order: (address, method, path with its query)."""
    return []


@pytest.fixture
async def stand_in(agent_calls: list[tuple[str, str, str]]) -> AsyncIterator[StandIn]:
    """stand_in(host, port=0, fsid=FSID, delete_image=None, health=None, cluster_answer=None,
    import_image=None): start a stand-in cephagent; its port.

    It answers `/health` with `health` (else a cephagent's) and `/v1/cluster` with `cluster_answer` (else
    the cluster `fsid`), and the `DELETE` of an RBD image (`/v1/images/...`, `/v1/volumes/...`) with the
    error body `delete_image` (status, code) when given, else 204. `POST /v1/images` (an import) closes the
    connection unanswered when `import_image` is "hang up", answers the error `import_image` (status, code)
    when given, else `import_image` or a task as a 202. Pools exist, and the VM user's key is `k`. Each
    request is recorded in `agent_calls`, with its query.
    """
    runners: list[web.AppRunner] = []

    async def start(host: str, port: int = 0, fsid: str = FSID, delete_image: tuple[int, str] | None = None,
                    health: object = None, cluster_answer: object = None,
                    import_image: object = None) -> int:
        def answer(error: tuple[int, str] | None, default: web.Response) -> web.Response:
            if error is None:
                return default
            status, code = error
            return web.json_response(error_body(code, f"{code} at {host}", "name"), status=status)

        @web.middleware
        async def record(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
            agent_calls.append((host, request.method, request.path_qs))
            return await handler(request)

        async def health_answer(_: web.Request) -> web.Response:
            return web.json_response(HEALTH | {"fsid": fsid} if health is None else health)

        async def info(_: web.Request) -> web.Response:
            return web.json_response(cluster(fsid) if cluster_answer is None else cluster_answer)

        async def delete(_: web.Request) -> web.Response:
            return answer(delete_image, web.Response(status=204))

        async def start_import(request: web.Request) -> web.Response:
            if import_image == "hang up":
                assert request.transport is not None
                request.transport.close()
                return web.Response()
            if isinstance(import_image, tuple):
                return answer(import_image, web.Response())
            return web.json_response({"task_id": "t1"} if import_image is None else import_image, status=202)

        async def pool(request: web.Request) -> web.Response:
            return web.json_response({"name": (await request.json())["name"], "created": False})

        async def secret(_: web.Request) -> web.Response:
            return web.json_response({"user": "hs-vm", "key": "k", "fsid": fsid, "monitors": []})

        app = web.Application(middlewares=[record])
        app.router.add_get("/health", health_answer)
        app.router.add_get("/v1/cluster", info)
        app.router.add_delete("/v1/images/{pool}/{name}", delete)
        app.router.add_delete("/v1/volumes/{pool}/{name}", delete)
        app.router.add_post("/v1/images", start_import)
        app.router.add_post("/v1/pools/check-or-create", pool)
        app.router.add_get("/v1/secret", secret)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        runners.append(runner)
        return int(runner.addresses[0][1])

    yield start
    for r in runners:
        await r.cleanup()
