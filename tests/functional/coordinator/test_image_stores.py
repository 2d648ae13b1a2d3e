"""Image stores through the coordinator: a real imagestore agent (on loopback, where the coordinator reaches
it) registered as a host of kind imagestore and watched like ceph hosts, ImageStore backup storage,
images added with their checksums checked, read tickets a KVM host gets with its own token, and the `hs`
commands (image add --progress, list, show, delete; image-store add, list, delete)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import sys
import time

import pytest

from agentkit import __version__
from coordinator.client import ApiClientError, Client
from testbed.coordinators import Coordinator
from testbed.imagestore import ImageStoreProcess
from testbed.ports import free_port

pytestmark = pytest.mark.real
MiB = 1 << 20


@pytest.fixture(scope="module")
def store_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def coordinator(run, etcd, token, store_port):
    c = Coordinator(run, etcd, token, name="coord-images", imagestore_port=store_port, heartbeat_interval=0.5,
                    heartbeat_timeout=3, leader_ttl=2).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def agent(run, coordinator, token, store_port, image_dir):
    """The host `store-host` (kind imagestore) and its agent, started with the token its registration gave."""
    async def register() -> dict:
        async with Client(coordinator.url, token) as api:
            return await api.post("/v1/hosts", {"name": "store-host", "address": "127.0.0.1", "kind": "imagestore"})
    host = asyncio.run(register())
    a = ImageStoreProcess(run, run.path("store-root"), "127.0.0.1", store_port, file_roots=[image_dir],
                          token=host["token"]).start()
    yield a
    a.stop()


def hs(coordinator, token, *args, check=True):
    p = subprocess.run([sys.executable, "-m", "coordinator.cli", "--url", coordinator.url, f"--token={token}", *args],
                       capture_output=True, text=True, timeout=60)
    if check and p.returncode:
        raise AssertionError(p.stderr)
    return p


async def settled(api: Client, image: dict, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while image["status"] == "Downloading" or (image["status"] == "Ready" and not image["md5"]):
        assert time.monotonic() < deadline, image
        await asyncio.sleep(0.1)
        image = await api.get(f"/v1/images/{image['uuid']}")
    return image


async def test_the_store_host_is_watched_and_becomes_backup_storage(api, agent):
    for _ in range(100):
        host = await api.get("/v1/hosts/store-host")
        if host["state"] == "Connected":
            break
        await asyncio.sleep(0.1)
    assert (host["state"], host["agent_version"]) == ("Connected", __version__)
    assert re.fullmatch(r"[0-9a-f]{32}", host["agent_session"])  # the store process's, from its /health
    await api.post("/v1/hosts", {"name": "kvm-1", "address": "198.18.0.9"})
    for body, code, field in [({"host": "kvm-1"}, "invalid", "host"), ({"host": "nohost"}, "not_found", None),
                              ({"host": "store-host", "path": "/srv/elsewhere"}, "invalid", "path")]:
        with pytest.raises(ApiClientError) as e:
            await api.post("/v1/image-stores", {"name": "is-bad", **body})
        assert (e.value.code, e.value.field) == (code, field), e.value
    view = await api.post("/v1/image-stores", {"name": "is1", "host": "store-host", "path": str(agent.root)})
    assert (view["status"], view["path"], view["version"]) == ("Connected", str(agent.root), __version__)
    assert view["capacity"]["total"] > 0 and view["capacity"]["images"] == 0
    with pytest.raises(ApiClientError) as e:
        await api.post("/v1/image-stores", {"name": "is2", "host": "store-host"})
    assert e.value.status == 409
    assert [s["name"] for s in (await api.get("/v1/image-stores"))["image_stores"]] == ["is1"]


async def test_images_are_checked_and_hosts_read_them_with_tickets(api, agent, image_dir):
    data = (image_dir / "small.qcow2").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    image = await settled(api, await api.post("/v1/images", {
        "name": "small", "url": f"file://{image_dir}/small.qcow2", "backup_storage_uuid": "is1", "sha256": sha}))
    assert (image["status"], image["backup_storage_type"], image["format"], image["media_type"]) == \
        ("Ready", "ImageStore", "qcow2", "RootVolumeTemplate")
    assert (image["size"], image["virtual_size"], image["sha256"]) == (len(data), 64 * MiB, sha)
    assert image["md5"] == hashlib.md5(data, usedforsecurity=False).hexdigest()

    kvm = await api.post("/v1/hosts", {"name": "kvm-2", "address": "198.18.0.10"})
    async with Client(api.url, kvm["token"]) as host_api:
        ticket = await host_api.post(f"/v1/images/{image['uuid']}/tickets", {})
    assert (ticket["sha256"], ticket["size"], ticket["format"]) == (sha, len(data), "qcow2")
    assert ticket["url"] == f"{agent.url}/v1/images/{image['uuid']}/data"
    status, body = agent.get(f"/v1/images/{image['uuid']}/data", token=ticket["ticket"])
    assert status == 200 and hashlib.sha256(body).hexdigest() == sha
    assert f"host:{kvm['uuid']}" in agent.log()  # the store logs who read
    async with Client(api.url, "not-a-host-token-123") as stranger:
        with pytest.raises(ApiClientError) as e:
            await stranger.post(f"/v1/images/{image['uuid']}/tickets", {})
    assert e.value.status == 401

    bad = await settled(api, await api.post("/v1/images", {
        "name": "bad", "url": f"file://{image_dir}/small.raw", "backup_storage_uuid": "is1", "md5": "0" * 32}))
    assert bad["status"] == "Failed" and bad["reason"].startswith("checksum_mismatch: md5 of the downloaded data")
    with pytest.raises(ApiClientError) as e:
        await api.post(f"/v1/images/{bad['uuid']}/tickets", {})
    assert (e.value.status, e.value.code) == (409, "invalid_state")
    await api.delete(f"/v1/images/{bad['uuid']}")


async def test_a_new_token_reaches_the_store_with_a_redeploy(api, agent):
    """What a deploy asks (`POST /v1/hosts/{uuid}/token`): the store's token is kept while valid; a new one
    takes over at once for the coordinator, so the store answers again once it runs with it."""
    assert await api.post("/v1/hosts/store-host/token", {"keep": agent.token}) == {"token": agent.token,
                                                                                   "rotated": False}
    new = await api.post("/v1/hosts/store-host/token", {"keep": "not-the-token"})
    assert new["rotated"] and new["token"] != agent.token
    view = await api.get("/v1/image-stores/is1")
    assert view["status"] == "Disconnected" and "refused the coordinator's token" in view["reason"]
    agent.stop()
    agent.token = new["token"]
    agent.start()
    assert (await api.get("/v1/image-stores/is1"))["status"] == "Connected"


def test_the_cli_adds_with_progress_lists_shows_and_deletes(coordinator, token, agent, image_dir):
    p = hs(coordinator, token, "--json", "image", "add", "cli-img", f"file://{image_dir}/small.raw",
           "--backup-storage", "is1", "--media-type", "DataVolumeTemplate", "--progress")
    image = json.loads(p.stdout)
    assert (image["status"], image["format"], image["media_type"]) == ("Ready", "raw", "DataVolumeTemplate")
    assert "cli-img [" in p.stderr
    assert "cli-img" in hs(coordinator, token, "image", "list").stdout
    assert f"uuid: {image['uuid']}" in hs(coordinator, token, "image", "show", "cli-img").stdout
    assert "is1" in hs(coordinator, token, "image-store", "list").stdout
    p = hs(coordinator, token, "image-store", "delete", "is1", check=False)
    assert p.returncode == 1 and "still holds" in p.stderr
    p = hs(coordinator, token, "host", "delete", "store-host", check=False)
    assert p.returncode == 1 and "holds an image store" in p.stderr
    assert hs(coordinator, token, "image", "delete", "cli-img").stdout == f"deleted image cli-img ({image['uuid']})\n"
    hs(coordinator, token, "image", "delete", "small")
    assert agent.get("/v1/images")[1] == b"[]"
    hs(coordinator, token, "image-store", "delete", "is1")
