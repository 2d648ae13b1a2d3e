"""The cephagent HTTP API against the real cluster, in-process with aiohttp's test server, driven by raw
requests (auth, error bodies) and by `cephagent.client` (the coordinator's view)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import aiohttp
import pytest
import rbd
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cephagent.client import AgentUnreachable, CephAgentClient, probe
from cephagent.errors import FsidMismatch, RemoteError
from cephagent.images import MARKER
from cephagent.main import init_app
from cephagent.settings import CephAgentSettings
from cephagent.wire import ParentSpec
from testbed import promtext
from testbed.pki import PLAIN
from testbed.ports import free_port

pytestmark = pytest.mark.real
MiB = 1 << 20
TOKEN, SCRAPER = "t" * 24, "m" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IMAGES, VOLUMES = "hsimages", "hsvolumes"


@pytest.fixture
async def agent(ceph, pools, image_dir, tmp_path):
    settings = CephAgentSettings(token=TOKEN, ceph_conf=str(ceph.conf), client_name=ceph.client,
                                 tmp_dir=str(tmp_path / "staging"), file_url_roots=str(image_dir),
                                 vm_client_name="client.hsapivm")
    async with TestClient(TestServer(init_app(settings), host="127.0.0.1")) as client:
        yield client


@pytest.fixture
async def client(agent):
    async with CephAgentClient(str(agent.make_url("")), TOKEN) as c:
        yield c


@pytest.mark.parametrize("method, path", [("GET", "/health"), ("GET", "/v1/cluster"), ("GET", "/v1/secret"),
                                          ("POST", "/v1/volumes"), ("DELETE", "/v1/volumes/p/v"), ("GET", "/nope")])
async def test_every_request_needs_the_token(agent, method, path):
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": TOKEN}):
        r = await agent.request(method, path, headers=headers)
        assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert (await r.json())["error"]["code"] == "unauthorized"


async def test_cluster_secret_and_error_bodies(agent, ceph):
    r = await agent.get("/health", headers=AUTH)
    assert r.status == 200 and (await r.json())["fsid"] == ceph.fsid
    info = await (await agent.get("/v1/cluster", headers=AUTH)).json()
    assert info["fsid"] == ceph.fsid and info["mons"][0]["addr"] == ceph.mons["a"].addr
    assert {p["name"] for p in info["pools"]} >= {IMAGES, VOLUMES}

    r = await agent.post("/v1/pools/check-or-create", json={"name": "hsmissing", "must_exist": True}, headers=AUTH)
    assert (r.status, await r.json()) == (404, {"error": {"code": "pool_not_found", "field": "name",
                                                          "message": "Ceph pool 'hsmissing' does not exist"}})
    r = await agent.post("/v1/volumes", json={"pool": "a/b", "name": "x", "size": 1}, headers=AUTH)
    assert r.status == 400 and (await r.json())["error"]["field"] == "pool"
    r = await agent.post("/v1/volumes", data=b"{not json", headers=AUTH)
    assert r.status == 400 and (await r.json())["error"]["code"] == "invalid"
    r = await agent.get(f"/v1/volumes/{VOLUMES}/hsnothere", headers=AUTH)
    assert (r.status, (await r.json())["error"]["code"]) == (404, "image_not_found")
    r = await agent.get("/v1/nothing", headers=AUTH)
    assert (r.status, (await r.json())["error"]["code"]) == (404, "not_found")
    r = await agent.get("/v1/tasks/nope", headers=AUTH)
    assert (r.status, (await r.json())["error"]["code"]) == (404, "task_not_found")

    secret = await (await agent.get(f"/v1/secret?pool={VOLUMES}", headers=AUTH)).json()
    assert (secret["user"], secret["fsid"], secret["monitors"]) == ("hsapivm", ceph.fsid, [ceph.mons["a"].addr])
    r = await agent.get("/v1/secret", headers=AUTH)
    assert r.status == 400 and (await r.json())["error"]["field"] == "pool"


async def test_import_clone_and_delete_rules_through_the_client(client, image_dir):
    task_id = await client.import_image(IMAGES, "hsapi", f"file://{image_dir}/small.qcow2")
    assert await client.import_image(IMAGES, "hsapi", f"file://{image_dir}/small.qcow2") == task_id  # deduplicated
    seen = []
    image = await client.wait(task_id, seen.append, interval=0.05, timeout=60)
    assert image.size == 64 * MiB and seen[-1].state == "succeeded" and seen[-1].percent == 100.0

    src = ParentSpec(pool=IMAGES, image="hsapi")
    root = await client.clone(VOLUMES, "hsapiroot", src, size=128 * MiB)
    assert (root.parent, root.size, root.used) == (src, 128 * MiB, 0)
    with pytest.raises(RemoteError) as e:
        await client.delete_image(IMAGES, "hsapi")
    assert (e.value.status, e.value.code) == (409, "has_dependants") and f"{VOLUMES}/hsapiroot" in e.value.message

    snap = await client.create_snapshot(VOLUMES, "hsapiroot", "s1", protect=True)
    assert snap.protected
    with pytest.raises(RemoteError, match="protected snapshot") as e:
        await client.delete_volume(VOLUMES, "hsapiroot")
    assert e.value.code == "snapshot_protected"
    await client.delete_snapshot(VOLUMES, "hsapiroot", "s1")
    assert (await client.resize(VOLUMES, "hsapiroot", 256 * MiB)).size == 256 * MiB
    assert (await client.flatten(VOLUMES, "hsapiroot")).parent is None
    assert (await client.image(IMAGES, "hsapi")).children == []
    await client.delete_volume(VOLUMES, "hsapiroot")
    await client.delete_image(IMAGES, "hsapi")
    await client.delete_image(IMAGES, "hsapi")  # deleting what is gone is fine

    data = await client.create_volume(VOLUMES, "hsapidata", 8 * MiB)
    assert (data.size, data.parent) == (8 * MiB, None)
    await client.delete_volume(VOLUMES, "hsapidata")


async def test_failed_import_task_reports_its_error(client):
    task_id = await client.import_image(IMAGES, "hsapifail", "file:///etc/passwd")
    with pytest.raises(RemoteError, match="outside the directories") as e:
        await client.wait(task_id, interval=0.05, timeout=30)
    assert e.value.code == "import_failed"


async def test_an_image_another_agent_imports_is_refused_until_it_lets_go(client, cluster, image_dir):
    """As a 409 of the request, which the coordinator asks again (an agent that crashed mid-import holds the
    image for another 30 s, osd_client_watch_timeout): as a failed task, that import was Failed for good."""
    url = f"file://{image_dir}/small.raw"
    with cluster.ioctx(IMAGES) as io:
        rbd.RBD().create(io, "hsapiboth", 4 * MiB)
        with rbd.Image(io, "hsapiboth") as writing:  # the other agent's import, open read-write
            writing.metadata_set(MARKER, "incomplete")
            with pytest.raises(RemoteError, match=f"{IMAGES}/hsapiboth is being imported by another client") as e:
                await client.import_image(IMAGES, "hsapiboth", url)
            assert (e.value.status, e.value.code, e.value.field) == (409, "in_use", "name")
    image = await client.wait(await client.import_image(IMAGES, "hsapiboth", url), interval=0.05, timeout=60)
    assert image.size == 64 * MiB
    await client.delete_image(IMAGES, "hsapiboth")


async def test_deleting_an_image_stops_its_import_and_leaves_nothing(client, tmp_path):
    """An image deleted while its agent still downloads it: the import is cancelled, nothing of it stays in
    the pool or in tmp_dir, and its task says why (it used to finish and leave the image in the pool)."""
    release = asyncio.Event()

    async def stalls(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(64 * MiB)})
        await resp.prepare(request)
        await resp.write(b"\1" * (8 * MiB))
        await release.wait()  # the rest never comes while the test runs
        return resp

    app = web.Application()
    app.router.add_get("/slow.raw", stalls)
    async with TestServer(app, host="127.0.0.1") as server:
        try:
            task_id = await client.import_image(IMAGES, "hsapidel", str(server.make_url("/slow.raw")))
            async with asyncio.timeout(30):
                while (t := await client.task(task_id)).progress.phase != "write" or not t.progress.done:
                    await asyncio.sleep(0.05)
            assert (await client.volume(IMAGES, "hsapidel")).size == 64 * MiB  # written into the pool
            await client.delete_image(IMAGES, "hsapidel")
            task = await client.task(task_id)
            assert (task.state, task.error.code, task.error.message) == ("failed", "cancelled",
                                                                         "the image was deleted")
            with pytest.raises(RemoteError) as e:
                await client.volume(IMAGES, "hsapidel")
            assert e.value.status == 404
            assert list((tmp_path / "staging").glob("import-*")) == []
        finally:
            release.set()


async def test_probe_applies_the_one_cluster_rule(client, ceph, agent):
    fsid, infos = await probe({"root:***@127.0.0.1:22/?monPort=6789": client})
    assert fsid == ceph.fsid and infos["root:***@127.0.0.1:22/?monPort=6789"].fsid == ceph.fsid
    with pytest.raises(FsidMismatch, match="the storage's cluster is 00000000"):
        await probe({"mon-a": client}, expected_fsid="00000000-0000-0000-0000-000000000000")
    async with CephAgentClient("http://127.0.0.1:9", TOKEN, timeout=5) as dead:
        with pytest.raises(RemoteError, match="mon mon-x: cephagent at http://127.0.0.1:9 did not answer") as e:
            await probe({"mon-a": client, "mon-x": dead})
    assert e.value.code == "agent_unreachable"
    async with CephAgentClient(str(agent.make_url("")), "wrong-token-wrong-token") as bad:
        with pytest.raises(RemoteError, match="mon mon-b: missing or wrong bearer token"):
            await probe({"mon-b": bad})


async def test_cephagent_process_runs_from_env_config(ceph):
    """…and a scraper's metrics token reads its /metrics, where the requests show, and opens no volume."""
    port = free_port()
    env = {"HS_CEPHAGENT_CONFIG": "/nonexistent.toml", "HS_CEPHAGENT_TOKEN": TOKEN,
           "HS_CEPHAGENT_PORT": str(port), "HS_CEPHAGENT_LISTEN": "127.0.0.1",
           "HS_CEPHAGENT_CEPH_CONF": str(ceph.conf), "HS_CEPHAGENT_TMP_DIR": str(ceph.dir / "agent-tmp"),
           "HS_CEPHAGENT_TLS": PLAIN, "HS_CEPHAGENT_METRICS_TOKEN": SCRAPER}
    proc = ceph.run.popen([sys.executable, "-m", "cephagent.main"], env=env, log_name="cephagent")
    try:
        async with CephAgentClient(f"http://127.0.0.1:{port}", TOKEN, timeout=2) as c:
            for _ in range(100):
                try:
                    assert (await c.health())["fsid"] == ceph.fsid
                    break
                except AgentUnreachable:  # still starting
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("cephagent did not answer")
        scrapes = {"Authorization": f"Bearer {SCRAPER}"}
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=scrapes) as scraper:
            r = await scraper.get(f"/v1/volumes/{VOLUMES}/v1")
            assert (r.status, (await r.json())["error"]["code"]) == (401, "unauthorized")
            r = await scraper.get("/metrics")
            assert r.status == 200
            text = await r.text()
        # one at least: a try that timed out while the agent started may have been answered too
        assert promtext.value(text, "hoststack_http_requests_total", route="/health", method="GET", code="200") >= 1
        assert promtext.value(text, "hoststack_http_requests_total", route="/v1/volumes/{pool}/{name}",
                              method="GET", code="401") == 1
        assert promtext.value(text, "hoststack_ceph_workers_busy", kind="quick") == 0
    finally:
        ceph.run.stop(proc)


def test_cephagent_exits_when_the_cluster_is_unreachable(ceph):
    env = {**os.environ, "HS_CEPHAGENT_CONFIG": "/nonexistent.toml", "HS_CEPHAGENT_TOKEN": TOKEN,
           "HS_CEPHAGENT_PORT": str(free_port()), "HS_CEPHAGENT_CEPH_CONF": "", "HS_CEPHAGENT_TIMEOUT": "1",
           "HS_CEPHAGENT_MON_HOST": f"[v1:127.0.0.1:{free_port()}]", "HS_CEPHAGENT_KEYRING": str(ceph.keyring),
           "HS_CEPHAGENT_TLS": PLAIN, "HS_CEPHAGENT_TMP_DIR": str(ceph.dir / "unreachable-tmp")}
    p = subprocess.run([sys.executable, "-m", "cephagent.main"], env=env, capture_output=True, text=True,
                       timeout=30, check=False)
    assert p.returncode == 1
    assert "Ceph cluster unavailable: connecting as client.admin" in p.stderr
