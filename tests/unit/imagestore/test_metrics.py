"""The image store's /metrics as a scraper reads it (`testbed/promtext.py`): the scrapers' `metrics_token` opens
/metrics and /health and nothing else; what the store holds, its free space and reserve, transfers running,
bytes received and served, tickets refused by reason, every request answered."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from imagestore.layout import Layout
from imagestore.main import init_app
from imagestore.tickets import mint, ticket_key
from testbed import promtext
from tests.unit.imagestore import test_api
from tests.unit.imagestore.test_api import ADMIN, TOKEN, MiB, iso_blob, put, settings, upload_headers, wait

no_crash, source = test_api.no_crash, test_api.source  # its fixtures serve here too

SCRAPER_TOKEN = "s" * 20
SCRAPER = {"Authorization": f"Bearer {SCRAPER_TOKEN}"}
FREE = 7 << 30


@pytest.fixture
async def store(tmp_path, monkeypatch) -> AsyncIterator[TestClient]:
    monkeypatch.setattr(Layout, "available", lambda self: FREE)
    app = init_app(settings(tmp_path / "store", metrics_token=SCRAPER_TOKEN, reserve_bytes=3 << 30))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def scrape(store: TestClient, headers: dict[str, str] = SCRAPER) -> str:
    r = await store.get("/metrics", headers=headers)
    assert (r.status, r.headers["Content-Type"]) == (200, "text/plain; version=0.0.4; charset=utf-8")
    return await r.text()


def ticket(image_id: str, **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(ticket_key(TOKEN), 'host:h1', image_id, kw.pop('ttl', 60), **kw)[0]}"}


async def test_the_metrics_token_reads_metrics_and_health_only(store, source):
    text = await scrape(store)
    assert promtext.value(text, "hoststack_imagestore_free_bytes") == FREE
    await scrape(store, ADMIN)  # the coordinator's token reads it too
    assert (await store.get("/metrics")).status == 401
    assert (await store.get("/metrics", headers={"Authorization": f"Bearer {'x' * 20}"})).status == 401
    await wait(store, (await put(store, "i1", url=source.url("a.iso")))["id"])
    for method, path in [("GET", "/v1/images"), ("GET", "/v1/images/i1"), ("GET", "/v1/capacity"),
                         ("DELETE", "/v1/images/i1"), ("PUT", "/v1/images/i2"), ("GET", "/v1/images/i1/data"),
                         ("HEAD", "/v1/images/i1/data"), ("PUT", "/v1/images/i3/data"),
                         ("GET", f"/v1/images/i1/data?ticket={SCRAPER_TOKEN}")]:
        r = await store.request(method, path, headers=SCRAPER if "?" not in path else {},
                                json={"url": source.url("b.iso")})
        assert r.status == 401, (method, path)
    assert (await (await store.get("/v1/images/i1", headers=ADMIN)).json())["state"] == "ready"
    assert (await (await store.get("/health", headers=SCRAPER)).json())["status"] == "ok"
    text = await scrape(store)
    requests = "hoststack_http_requests_total"
    assert promtext.value(text, requests, route="/metrics", method="GET", code="401") == 2
    assert promtext.value(text, requests, route="/v1/images/{image_id}/data", method="GET", code="401") == 2
    assert promtext.value(text, requests, route="/v1/images", method="GET", code="401") == 1
    refused = "hoststack_imagestore_tickets_refused_total"
    assert promtext.value(text, refused, op="read", reason="malformed") == 3  # GET, HEAD, ?ticket=
    assert promtext.value(text, refused, op="put", reason="malformed") == 1


async def test_without_a_metrics_token_only_the_coordinator_scrapes(tmp_path):
    app = init_app(settings(tmp_path / "store"))
    async with TestClient(TestServer(app, host="127.0.0.1")) as store:
        assert (await store.get("/metrics", headers=SCRAPER)).status == 401
        await scrape(store, ADMIN)


async def test_metrics_count_images_space_bytes_and_refused_tickets(store, source, monkeypatch):
    text = await scrape(store)
    for state in ("ready", "downloading", "failed"):
        assert promtext.value(text, "hoststack_imagestore_images", state=state) == 0
    assert promtext.value(text, "hoststack_imagestore_reserve_bytes") == 3 << 30
    data = (source.dir / "a.iso").read_bytes()
    await wait(store, (await put(store, "i1", url=source.url("a.iso")))["id"])
    await wait(store, (await put(store, "bad", url=source.url("b.iso"), sha256="0" * 64))["id"])
    assert (await store.get("/v1/images/i1/data", headers=ticket("i1"))).status == 200
    r = await store.get("/v1/images/i1/data", headers={**ticket("i1"), "Range": "bytes=10-19"})
    assert (r.status, len(await r.read())) == (206, 10)
    r = await store.get("/v1/images/i1/data", headers={**ticket("i1"), "Range": f"bytes={len(data)}-"})
    assert r.status == 416
    assert (await store.head("/v1/images/i1/data", headers=ticket("i1"))).status == 200  # no bytes sent
    uploaded = iso_blob(seed=5)
    r = await store.put("/v1/images/u1/data", data=uploaded, headers=upload_headers("u1", uploaded))
    assert r.status == 201
    refusals = [("/v1/images/i1/data", ticket("other")), ("/v1/images/i1/data", ticket("i1", ttl=1, now=1000)),
                ("/v1/images/i1/data", ticket("i1", op="put"))]
    for path, headers in refusals:
        assert (await store.get(path, headers=headers)).status == 401
    r = await store.put("/v1/images/u2/data", data=uploaded, headers={**upload_headers("u2", uploaded),
                                                                        **ticket("u2")})
    assert r.status == 401
    test_api.forbid_listing(monkeypatch)  # a scrape never walks the image directory
    text = await scrape(store)
    assert promtext.value(text, "hoststack_imagestore_images", state="ready") == 2
    assert promtext.value(text, "hoststack_imagestore_images", state="failed") == 1
    assert promtext.value(text, "hoststack_imagestore_image_bytes") == len(data) + len(uploaded)
    assert promtext.value(text, "hoststack_imagestore_free_bytes") == FREE
    received = "hoststack_imagestore_received_bytes_total"
    assert promtext.value(text, received, kind="download") == len(data) + len(iso_blob(seed=2))  # the failed one's too
    assert promtext.value(text, received, kind="upload") == len(uploaded)
    assert promtext.value(text, "hoststack_imagestore_served_bytes_total") == len(data) + 10
    refused = "hoststack_imagestore_tickets_refused_total"
    assert {reason: promtext.value(text, refused, op="read", reason=reason) for reason in (
        "other_image", "expired", "other_op", "signature")} == {"other_image": 1, "expired": 1, "other_op": 1,
                                                                "signature": 0}
    assert promtext.value(text, refused, op="put", reason="other_op") == 1
    # a read is counted with the status sent, which its Range decides as it is sent
    reads = {code: promtext.value(text, "hoststack_http_requests_total", route="/v1/images/{image_id}/data",
                                  method="GET", code=code) for code in ("200", "206", "416")}
    assert reads == {"200": 1, "206": 1, "416": 1}


async def test_metrics_show_the_transfers_running(store, source):
    await put(store, "w1", url=source.url("slow/a.iso"))
    while not (await wait(store, "w1", until=("downloading",)))["progress"]["done"]:
        await asyncio.sleep(0.05)
    uploaded = iso_blob(seed=6)
    upload, gate = await test_api.half_uploaded(store, "u1", uploaded)
    text = await scrape(store)
    transfers = "hoststack_imagestore_transfers"
    assert [promtext.value(text, transfers, kind=k) for k in ("download", "upload", "read")] == [1, 1, 0]
    assert promtext.value(text, "hoststack_imagestore_images", state="downloading") == 2
    assert promtext.value(text, "hoststack_imagestore_received_bytes_total", kind="upload") == MiB
    gate.set()
    assert (await upload).status == 201
    await wait(store, "w1")
    text = await scrape(store)
    assert [promtext.value(text, transfers, kind=k) for k in ("download", "upload", "read")] == [0, 0, 0]
    assert hashlib.sha256(uploaded).hexdigest() == (await (await store.get("/v1/images/u1", headers=ADMIN)).json())[
        "sha256"]
