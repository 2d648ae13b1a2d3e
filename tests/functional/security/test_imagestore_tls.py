"""The image store's hop over TLS, and the coordinator's /metrics behind its scoped token (issue 14).

A real imagestore agent serves TLS only, with a certificate of the run's CA for its address; the TLS
coordinator polls it over https verifying that CA, adds an image to it, and gives a KVM host (its own
token) a read ticket whose data URL is https; the data is read with the ticket and the CA. Plain HTTP to
the store is never answered.
"""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
import pytest

from agentkit.tls import client_context
from coordinator.client import Client
from testbed.coordinators import Coordinator
from testbed.imagestore import ImageStoreProcess
from testbed.pki import refuses_plain_http
from testbed.ports import free_port

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def store_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def coordinator(run, etcd, token, pki, store_port):
    c = Coordinator(run, etcd, token, name="coord-tls-images", pki=pki, imagestore_port=store_port,
                    heartbeat_interval=0.5, heartbeat_timeout=3, leader_ttl=2,
                    metrics_token="metrics-token-0123456789").start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def store(run, coordinator, token, pki, store_port, image_dir):
    async def register() -> dict:
        async with coordinator.client() as api:
            return await api.post("/v1/hosts", {"name": "tls-store", "address": "127.0.0.1", "kind": "imagestore"})
    host = asyncio.run(register())
    s = ImageStoreProcess(run, run.path("tls-store-root"), "127.0.0.1", store_port, file_roots=[image_dir],
                          token=host["token"], pki=pki).start()
    yield s
    s.stop()


async def test_the_image_store_serves_tls_only_and_the_coordinator_reaches_it_so(api, store, image_dir):
    assert store.url.startswith("https://") and refuses_plain_http("127.0.0.1", store.port)
    for _ in range(100):
        if (await api.get("/v1/hosts/tls-store"))["state"] == "Connected":
            break
        await asyncio.sleep(0.1)
    view = await api.post("/v1/image-stores", {"name": "tls-is", "host": "tls-store", "path": str(store.root)})
    assert view["status"] == "Connected"
    data = (image_dir / "small.raw").read_bytes()
    image = await api.post("/v1/images", {"name": "tls-img", "url": f"file://{image_dir}/small.raw",
                                          "backup_storage_uuid": "tls-is"})
    for _ in range(300):
        if image["status"] != "Downloading":
            break
        await asyncio.sleep(0.1)
        image = await api.get(f"/v1/images/{image['uuid']}")
    assert image["status"] == "Ready", image

    kvm = await api.post("/v1/hosts", {"name": "tls-kvm", "address": "198.18.0.19"})
    async with Client(api.url, kvm["token"], ca=api.ca) as host_api:
        ticket = await host_api.post(f"/v1/images/{image['uuid']}/tickets", {})
    assert ticket["url"] == f"https://127.0.0.1:{store.port}/v1/images/{image['uuid']}/data"
    status, body = store.get(f"/v1/images/{image['uuid']}/data", token=ticket["ticket"])
    assert status == 200 and hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    assert f"host:{kvm['uuid']}" in store.log()  # issued in the asking host's name


async def test_metrics_take_the_metrics_token_and_nothing_less(coordinator):
    connector = aiohttp.TCPConnector(ssl=client_context(coordinator.ca))
    async with aiohttp.ClientSession(coordinator.url, connector=connector) as s:
        for token, status in (("metrics-token-0123456789", 200), ("not-a-token-0123456789", 401), (None, 401)):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with s.get("/metrics", headers=headers) as r:
                assert r.status == status, token
                if status == 200:
                    assert "hoststack_http_requests_total" in await r.text()
