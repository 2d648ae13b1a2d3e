"""The HTTP request metrics every edge shares (agentkit/httpmetrics.py), on a real aiohttp app in-process: the
status counted is the one sent, also when aiohttp decides it as it sends the response (a file's Range)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agentkit import httpmetrics
from agentkit.metrics import Registry
from testbed import promtext

REQUESTS = "hoststack_http_requests_total"


@pytest.fixture
async def client(tmp_path) -> AsyncIterator[TestClient]:
    (tmp_path / "data").write_bytes(bytes(range(256)) * 4)

    async def data(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(tmp_path / "data")

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="hi", status=201)

    async def gone(request: web.Request) -> web.Response:
        raise web.HTTPGone()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=202)
        await response.prepare(request)
        await response.write(b"streamed")
        return response

    registry = Registry()

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=registry.render())

    app = web.Application(middlewares=[httpmetrics.middleware])
    httpmetrics.install(app, registry)
    app.add_routes([web.get(f"/{h.__name__}", h) for h in (data, text, gone, stream, metrics)])
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def requests(client: TestClient) -> dict[tuple[str, int], float]:
    """The requests counted by (route, status), all of them GETs."""
    found = promtext.series(await (await client.get("/metrics")).text())
    assert all(dict(labels)["method"] == "GET" for name, labels in found if name == REQUESTS)
    return {
        (dict(labels)["route"], int(dict(labels)["code"])): v
        for (name, labels), v in found.items()
        if name == REQUESTS and dict(labels)["route"] != "/metrics"
    }


async def test_a_file_is_counted_with_the_status_its_range_makes_of_it(client):
    for headers, status, size in [
        ({}, 200, 1024),
        ({"Range": "bytes=10-19"}, 206, 10),
        ({"Range": "bytes=-4"}, 206, 4),
        ({"Range": "bytes=5000-"}, 416, None),
    ]:
        r = await client.get("/data", headers=headers)
        assert r.status == status
        body = await r.read()
        if size is not None:
            assert len(body) == size
    last_modified = (await client.get("/data")).headers["Last-Modified"]
    assert (await client.get("/data", headers={"If-Modified-Since": last_modified})).status == 304
    assert await requests(client) == {("/data", 200): 2, ("/data", 206): 2, ("/data", 304): 1, ("/data", 416): 1}


async def test_answers_errors_and_streams_are_counted_once_with_their_status(client):
    assert (await client.get("/text")).status == 201
    assert (await client.get("/gone")).status == 410
    r = await client.get("/stream")
    assert (r.status, await r.read()) == (202, b"streamed")
    assert (await client.get("/nowhere")).status == 404
    assert await requests(client) == {("/text", 201): 1, ("/gone", 410): 1, ("/stream", 202): 1, ("unmatched", 404): 1}


async def test_the_middleware_without_install_refuses_to_count_half():
    async def x(request: web.Request) -> web.Response:
        return web.Response(text="x")

    app = web.Application(middlewares=[httpmetrics.middleware])
    app[httpmetrics.HTTP] = httpmetrics.HttpMetrics(Registry())  # what the edges did before install()
    app.router.add_get("/x", x)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        assert (await c.get("/x")).status == 500
