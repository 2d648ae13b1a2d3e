"""The strict edge: bodies, queries, path parameters and tokens of any shape are a 4xx, never a 500 or a guess."""

from __future__ import annotations

from typing import Literal

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel, Field, ValidationError

from agentkit.model import Service
from coordinator.api import http, parse
from coordinator.api.appkeys import ADMIN_TOKEN

TOKEN = "admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Inner(BaseModel):
    size: int = Field(0, ge=0)


class Body(BaseModel):
    name: str = Field("x", max_length=8)
    cpu: int = 1
    ratio: float = 1.0
    on: bool = False
    kind: Literal["a", "b"] = "a"
    services: list[Service] = []
    inner: Inner = Inner()
    extra: dict[str, object] = {}


class Query(BaseModel):
    wait: float = Field(0, ge=0, le=600)
    live: bool = True


routes = http.Routes("test")


@routes.route("POST", "/things", body=Body, query=Query)
async def create(request: web.Request, body: Body, query: Query) -> dict[str, object]:
    return {"body": body.model_dump(mode="json"), "query": query.model_dump()}


@routes.route("POST", "/things/{uuid}/poke")
async def poke(request: web.Request) -> dict[str, str]:
    return {"poked": request.match_info["uuid"]}


@pytest.fixture
async def client():
    app = web.Application(middlewares=[http.error_middleware], client_max_size=parse.MAX_BODY)
    app[ADMIN_TOKEN] = TOKEN
    for ep in routes.endpoints:
        app.router.add_route(ep.method, ep.path, http.make_handler(ep))
    async with TestClient(TestServer(app)) as c:
        yield c


async def post(client: TestClient, path: str, data: bytes | str = b"{}", headers: dict[str, str] | None = None,
               **params: str) -> tuple[int, dict]:
    resp = await client.post(path, data=data, headers={**AUTH, **(headers or {})}, params=params)
    return resp.status, await resp.json()


async def test_a_valid_body_and_query_are_taken_as_sent(client):
    status, got = await post(client, "/things", '{"cpu": 4, "ratio": 2, "services": ["DHCP"], "inner": {"size": 1}}',
                             wait="1.5", live="false")
    assert status == 200 and got["body"]["cpu"] == 4 and got["body"]["ratio"] == 2.0
    assert got["body"]["services"] == ["DHCP"] and got["query"] == {"wait": 1.5, "live": False}


@pytest.mark.parametrize("data, field, words", [
    ('{"cpus": 4}', "cpus", "unknown field"),
    ('{"inner": {"sizes": 1}}', "inner.sizes", "unknown field"),
    ('{"cpu": "4"}', "cpu", "valid integer"),
    ('{"cpu": 4.0}', "cpu", "valid integer"),
    ('{"cpu": true}', "cpu", "valid integer"),
    ('{"on": 1}', "on", "valid boolean"),
    ('{"name": 5}', "name", "valid string"),
    ('{"ratio": 1e999}', "ratio", "finite"),
    ('{"extra": {"deep": [1e999]}}', "extra.deep.0", "finite"),
    ('{"cpu": 9223372036854775808}', "cpu", "64 bits"),
    ("[]", None, "should be an object"),
])
async def test_bad_values_are_400_naming_the_field(client, data, field, words):
    status, got = await post(client, "/things", data)
    assert status == 400 and got["error"]["code"] == "invalid" and got["error"]["field"] == field
    assert words in got["error"]["message"]


@pytest.mark.parametrize("data, headers, words", [
    ("[" * 50_000 + "]" * 50_000, {}, "recursion limit"),
    ('{"cpu": ' + "9" * 5000 + "}", {}, "number out of range"),
    ('{"ratio": NaN}', {}, "not JSON"),
    ('{"ratio": -Infinity}', {}, "not JSON"),
    ('{"name": "\\ud800"}', {}, "not JSON"),
    (b'{"name": "\xff"}', {}, "not JSON"),
    ('{"cpu": 1} trailing', {}, "not JSON"),
    ('{"cpu": 1}', {"Content-Type": "application/json; charset=abuse"}, "charset 'abuse'"),
    ('{"cpu": 1}', {"Content-Type": "application/json; charset=latin-1"}, "charset"),
])
async def test_unparseable_bodies_are_400(client, data, headers, words):
    status, got = await post(client, "/things", data, headers)
    assert status == 400 and got["error"]["code"] == "invalid" and words in got["error"]["message"]


async def test_sizes_over_a_limit_are_413_naming_it(client):
    status, got = await post(client, "/things", '{"name": "123456789"}')
    assert (status, got["error"]["code"], got["error"]["field"]) == (413, "too_large", "name")
    assert "at most 8 characters" in got["error"]["message"]
    status, got = await post(client, "/things", b'{"name": "' + b"a" * parse.MAX_BODY + b'"}')
    assert (status, got["error"]["code"]) == (413, "too_large") and str(parse.MAX_BODY) in got["error"]["message"]


@pytest.mark.parametrize("params, field", [("foo=1", "foo"), ("wait=1&wait=2", "wait"), ("wait=inf", "wait"),
                                           ("wait=nan", "wait"), ("live=maybe", "live"), ("wait=-1", "wait")])
async def test_unknown_repeated_or_bad_query_parameters_are_400(client, params, field):
    resp = await client.post(f"/things?{params}", data=b"{}", headers=AUTH)
    got = await resp.json()
    assert resp.status == 400 and got["error"]["field"] == field


async def test_an_endpoint_without_body_or_query_takes_none(client):
    assert await post(client, "/things/t1/poke") == (200, {"poked": "t1"})
    assert await post(client, "/things/t1/poke", b"") == (200, {"poked": "t1"})
    status, got = await post(client, "/things/t1/poke", '{"force": true}')
    assert status == 400 and "takes no request body" in got["error"]["message"]
    status, got = await post(client, "/things/t1/poke", "{}", force="1")
    assert status == 400 and got["error"]["field"] == "force"


async def test_a_path_parameter_is_one_identifier(client):
    status, got = await post(client, "/things/a%2Fb/poke")
    assert status == 400 and got["error"]["field"] == "uuid"
    status, got = await post(client, "/things/%C3%A9/poke")
    assert status == 400 and got["error"]["field"] == "uuid"


@pytest.mark.parametrize("header", ["Bearer é", "Bearer \u00ff\u00fe", "Bearer ", "Basic " + TOKEN,
                                    "Bearer " + TOKEN[:-1], "Bearer " + TOKEN + "x"])
async def test_a_token_that_is_not_ours_is_401(client, header):
    resp = await client.post("/things", data=b"{}", headers={"Authorization": header})
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"


class Required(BaseModel):
    name: str


def test_a_misspelt_field_is_named_before_the_missing_one():
    with pytest.raises(ValidationError) as e:
        Required.model_validate_json('{"nmae": "x"}', strict=True, extra="forbid")
    error = parse.invalid(e.value, "body")
    assert (error.field, str(error), error.status) == ("nmae", "body field nmae: unknown field", 400)
