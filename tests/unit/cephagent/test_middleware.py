"""The cephagent's request guards on a loopback test server: the bearer token, and every failure in the
shared error envelope (domain errors, aiohttp's own errors, bugs)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cephagent.api import names, parse
from cephagent.appkeys import SETTINGS
from cephagent.errors import PoolNotFound
from cephagent.middleware import auth, errors
from cephagent.settings import CephAgentSettings
from cephagent.wire import PoolRequest

TOKEN = "t" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _missing_pool(request: web.Request) -> web.Response:
    raise PoolNotFound(field="name", pool=request.match_info["pool"])


async def _body(request: web.Request) -> web.Response:
    return web.json_response((await parse(request, PoolRequest)).model_dump())


async def _named(request: web.Request) -> web.Response:
    return web.json_response(names(request, "pool"))


async def _bug(request: web.Request) -> web.Response:
    raise ZeroDivisionError("a bug")


@pytest.fixture
async def agent() -> AsyncIterator[TestClient]:
    app = web.Application(middlewares=[errors, auth])
    app[SETTINGS] = CephAgentSettings(token=TOKEN)
    app.router.add_get("/missing/{pool}", _missing_pool)
    app.router.add_post("/body", _body)
    app.router.add_get("/named/{pool}", _named)
    app.router.add_get("/bug", _bug)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer " + "x" * 24}, {"Authorization": TOKEN},
                                     {"Authorization": "Bearer é"}, {"Authorization": "Bearer \u00ff\u00fe"}])
async def test_every_request_needs_the_token(agent, headers):
    r = await agent.get("/missing/p", headers=headers)
    assert (r.status, r.headers["WWW-Authenticate"]) == (401, "Bearer")
    assert await r.json() == {"error": {"code": "unauthorized", "message": "missing or wrong bearer token",
                                        "field": None}}


async def test_domain_errors_keep_code_status_and_field(agent):
    r = await agent.get("/missing/p", headers=AUTH)
    assert (r.status, await r.json()) == (404, {"error": {"code": "pool_not_found", "field": "name",
                                                          "message": "Ceph pool 'p' does not exist"}})


async def test_bodies_and_path_names_are_validated(agent):
    r = await agent.post("/body", json={"name": "a/b"}, headers=AUTH)
    assert r.status == 400 and (await r.json())["error"]["field"] == "name"
    r = await agent.post("/body", data=b"{not json", headers=AUTH)
    assert r.status == 400 and (await r.json())["error"]["code"] == "invalid"
    r = await agent.post("/body", json={"name": "p"}, headers=AUTH)
    assert await r.json() == {"name": "p", "must_exist": False}
    r = await agent.get("/named/a@b", headers=AUTH)
    assert (r.status, (await r.json())["error"]) == (400, {"code": "invalid", "field": "pool",
                                                           "message": "pool 'a@b' is not a valid name"})


async def test_unknown_paths_and_bugs_are_errors_too(agent):
    r = await agent.get("/nothing", headers=AUTH)
    assert (r.status, (await r.json())["error"]["code"]) == (404, "not_found")
    r = await agent.get("/bug", headers=AUTH)
    assert (r.status, await r.json()) == (500, {"error": {"code": "internal", "field": None,
                                                          "message": "internal error; see the cephagent log"}})
