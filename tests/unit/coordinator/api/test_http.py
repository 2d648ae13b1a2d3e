"""The HTTP edge: every failure leaves in the one envelope with its status; only bugs are 500s."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel, Field

from agentkit.errors import NotFound
from coordinator.api import http
from coordinator.api.appkeys import SETTINGS
from coordinator.domain.errors import MissingReference
from coordinator.etcd.cas import Contended
from coordinator.etcd.store import StoreUnavailable
from coordinator.settings import CoordinatorSettings

TOKEN = "admin-token-0123456789"
FAILURES: dict[str, Exception] = {
    "missing": NotFound(what="VM", ident="v1"),
    "reference": MissingReference(what="L2 network", ident="l2", field="l2_uuid"),
    "contended": Contended(what="VM v1"),
    "store": StoreUnavailable("etcd Range failed: deadline exceeded"),
    "bug": KeyError("uuid"),
}


class Body(BaseModel):
    name: str = Field(pattern=r"^[a-z]+$")


routes = http.Routes("test")


@routes.route("POST", "/fail/{what}", auth="none")
async def fail(request: web.Request) -> None:
    raise FAILURES[request.match_info["what"]]


@routes.route("POST", "/things", body=Body, status=201)
async def create(request: web.Request, body: Body) -> Body:
    return body


@routes.route("POST", "/nothing", status=204, auth="none")
async def nothing(request: web.Request) -> None:
    """A 204 endpoint's handler returns None."""


@pytest.fixture
async def client():
    app = web.Application(middlewares=[http.error_middleware])
    app[SETTINGS] = CoordinatorSettings(admin_token=TOKEN)
    for ep in routes.endpoints:
        app.router.add_route(ep.method, ep.path, http.make_handler(ep))
    async with TestClient(TestServer(app)) as c:
        yield c


async def answer(client: TestClient, path: str, **kw) -> tuple[int, dict]:
    resp = await client.post(path, **kw)
    return resp.status, await resp.json()


@pytest.mark.parametrize("what, status, error", [
    ("missing", 404, {"code": "not_found", "message": "VM v1 does not exist", "field": None}),
    ("reference", 400, {"code": "not_found", "message": "L2 network l2 does not exist", "field": "l2_uuid"}),
    ("contended", 409, {"code": "conflict", "message": "VM v1 keeps changing concurrently, retry", "field": None}),
    ("store", 503, {"code": "unavailable", "message": "the datastore is unreachable, retry", "field": None}),
    ("bug", 500, {"code": "internal", "message": "internal error", "field": None}),
])
async def test_failures_are_rendered_in_the_one_envelope(client, what, status, error):
    assert await answer(client, f"/fail/{what}") == (status, {"error": error})


async def test_bad_input_names_the_field_and_a_token_is_required(client):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert await answer(client, "/things", json={"name": "ok"}, headers=auth) == (201, {"name": "ok"})
    status, body = await answer(client, "/things", json={"name": "NO"}, headers=auth)
    assert status == 400 and body["error"]["code"] == "invalid" and body["error"]["field"] == "name"
    status, body = await answer(client, "/things", data=b"{", headers=auth)
    assert status == 400 and body["error"]["message"].startswith("request body is not JSON")
    assert await answer(client, "/things", json={"name": "ok"}) == (401, {"error": {
        "code": "unauthorized", "message": "a valid bearer token is required", "field": None}})


async def test_a_204_handler_returns_none_and_the_edge_answers_without_a_body(client):
    resp = await client.post("/nothing")
    assert resp.status == 204 and await resp.read() == b"" and "Content-Type" not in resp.headers
