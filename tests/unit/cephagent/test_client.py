"""The coordinator's cephagent client against stand-in agents on loopback: answers become wire models,
errors come back with the agent's code, an agent that does not answer is `agent_unreachable`, and
`probe` applies the one-cluster rule."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agentkit.errors import error_body
from cephagent.client import AgentUnreachable, CephAgentClient, probe
from cephagent.errors import FsidMismatch, RemoteError

TOKEN = "t" * 24


def cluster(fsid: str) -> dict[str, object]:
    return {"fsid": fsid, "health": {"status": "HEALTH_OK"}, "capacity": {"total": 1, "available": 1, "used": 0},
            "mons": [], "pools": []}


def stand_in(fsid: str) -> web.Application:
    async def info(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response(error_body("unauthorized", "missing or wrong bearer token"), status=401)
        return web.json_response(cluster(fsid))

    async def pool(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(error_body("pool_not_found", f"Ceph pool {body['name']!r} does not exist",
                                            "name"), status=404)

    async def task(request: web.Request) -> web.Response:
        return web.json_response({"id": "t1", "kind": "image-import", "state": "failed",
                                  "progress": {"phase": "download"},
                                  "error": {"code": "import_failed", "message": "HTTP 404"}})

    app = web.Application()
    app.router.add_get("/v1/cluster", info)
    app.router.add_post("/v1/pools/check-or-create", pool)
    app.router.add_get("/v1/tasks/{task_id}", task)
    return app


@pytest.fixture
async def agents() -> AsyncIterator[Callable[[str], CephAgentClient]]:
    """agents(fsid): a client of a stand-in agent of that cluster."""
    servers: list[TestServer] = []
    clients: list[CephAgentClient] = []

    async def make(fsid: str, token: str = TOKEN) -> CephAgentClient:
        server = TestServer(stand_in(fsid), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        clients.append(CephAgentClient(str(server.make_url("")), token, timeout=5))
        return clients[-1]
    yield make
    for c in clients:
        await c.close()
    for s in servers:
        await s.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_answers_and_errors(agents):
    client = await agents("f1")
    assert (await client.cluster()).fsid == "f1"
    with pytest.raises(RemoteError) as e:
        await client.ensure_pool("p", must_exist=True)
    assert (e.value.status, e.value.code, e.value.field) == (404, "pool_not_found", "name")
    with pytest.raises(RemoteError, match="HTTP 404") as e:
        await client.wait("t1", interval=0.01)
    assert (e.value.status, e.value.code) == (422, "import_failed")


async def test_an_agent_that_does_not_answer_is_unreachable():
    async with CephAgentClient(f"http://127.0.0.1:{closed_port()}", TOKEN, timeout=5) as dead:
        with pytest.raises(AgentUnreachable, match="did not answer: GET /v1/cluster") as e:
            await dead.cluster()
    assert (e.value.code, e.value.status) == ("agent_unreachable", 502)


async def test_probe_names_the_mon_that_failed_or_reports_another_cluster(agents):
    a, b, other = await agents("f1"), await agents("f1"), await agents("f2")
    fsid, infos = await probe({"mon-a": a, "mon-b": b})
    assert fsid == "f1" and set(infos) == {"mon-a", "mon-b"}
    with pytest.raises(FsidMismatch, match="mon mon-c reports fsid f2, but mon-a, mon-b report f1") as e:
        await probe({"mon-a": a, "mon-b": b, "mon-c": other})
    assert e.value.field == "mon_urls"
    with pytest.raises(FsidMismatch, match="the storage's cluster is f2"):
        await probe({"mon-a": a}, expected_fsid="f2")
    wrong = await agents("f1", token="w" * 24)
    with pytest.raises(RemoteError, match="mon mon-w: missing or wrong bearer token") as e:
        await probe({"mon-a": a, "mon-w": wrong})
    assert (e.value.code, e.value.status, e.value.field) == ("unauthorized", 401, "mon_urls")
