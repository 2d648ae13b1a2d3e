"""The coordinator's /metrics as a scraper reads it: requests per route template, bounded labels, and every
series in the text format (the store on a dict: no etcd here; tests/functional/coordinator/test_metrics.py
scrapes a real replica)."""

from __future__ import annotations

import pytest
from aiohttp import hdrs, web
from aiohttp.test_utils import TestClient, TestServer

from agentkit import httpmetrics
from agentkit.metrics import Registry
from coordinator.api import hosts as host_routes
from coordinator.api import http, metrics
from coordinator.api.appkeys import FANOUT, SETTINGS, STORE
from coordinator.fanout.hub import Fanout
from coordinator.settings import CoordinatorSettings
from testbed import promtext

from ..domain.memstore import MemoryStore

TOKEN = "admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def client():
    app = web.Application(middlewares=[httpmetrics.middleware, http.error_middleware])
    app[SETTINGS] = CoordinatorSettings(admin_token=TOKEN)
    app[STORE] = MemoryStore()
    metrics.install(app, Registry())
    app[FANOUT] = Fanout(app[STORE], 1 << 20, 16)
    for routes in (metrics.routes, host_routes.routes):
        for ep in routes.endpoints:
            app.router.add_route(ep.method, ep.path, http.make_handler(ep))
    async with TestClient(TestServer(app)) as c:
        yield c


async def scrape(client: TestClient) -> str:
    r = await client.get("/metrics", headers=AUTH)
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return await r.text()


async def test_requests_are_counted_per_route_template_and_known_method(client):
    for host in ("nope", "c0ffee00-0000-4000-8000-000000000001", 'a"b\\c'):
        assert (await client.get(f"/v1/hosts/{host}", headers=AUTH)).status == 404
    for method in ("PROPFIND", "MKCALENDAR", "M-SEARCH"):  # WebDAV's, CalDAV's, UPnP's: aiohttp's parser takes
        assert (await client.request(method, "/v1/hosts", headers=AUTH)).status == 405  # them (its Python one any)
    assert (await client.get("/v1/no/such/thing/42")).status == 404
    text = await scrape(client)
    requests = "hoststack_http_requests_total"
    assert promtext.value(text, requests, route="/v1/hosts/{uuid}", method="GET", code="404") == 3
    assert promtext.value(text, requests, route="unmatched", method="other", code="405") == 3
    assert promtext.value(text, requests, route="unmatched", method="GET", code="404") == 1
    assert promtext.value(text, "hoststack_http_request_seconds_count", route="unmatched", method="other") == 3
    seen = {dict(labels)["method"] for name, labels in promtext.series(text) if name.startswith("hoststack_http")}
    assert seen <= {*hdrs.METH_ALL, "other"}


async def test_every_series_reads_as_prometheus_text(client):
    await client.get("/v1/hosts", headers=AUTH)
    await scrape(client)
    found = promtext.families(await scrape(client))
    assert found["hoststack_stream_cut_offs"].type == "counter"  # the parser names a counter without _total
    assert found["hoststack_http_request_seconds"].type == "histogram"
    assert {"hoststack_host_streams", "hoststack_hosts", "hoststack_http_requests"} <= set(found)
