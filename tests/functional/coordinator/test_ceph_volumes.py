"""Images and volumes on Ceph through the coordinator API and the `hs` CLI, against a real one-node
cluster, a real cephagent process and a real coordinator on etcd: imports with progress (file:// and
http on loopback), COW root volumes that share their image, the delete-order rules, the RbdDisk a VM
takes, and the one-cluster rule for root volumes."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time

import pytest
from pydantic import SecretStr

from cephagent.client import CephAgentClient
from coordinator.client import ApiClientError, Client
from coordinator.domain import credentials
from coordinator.etcd import keys
from coordinator.etcd.store import Store
from testbed.coordinators import secret_key
from testbed.ports import free_port

pytestmark = pytest.mark.real
MiB = 1 << 20
IMAGE_SIZE = 64 * MiB


@pytest.fixture(scope="module")
def http_images(run, image_dir):
    """A plain HTTP server on loopback serving image_dir (a process: it serves while a test blocks)."""
    port = free_port()
    p = run.popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "--directory",
                   str(image_dir)], log_name="http-images")
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    run.stop(p)


@pytest.fixture(scope="module")
def cephagent_file_roots(image_dir):
    return [image_dir]


@pytest.fixture(scope="module")
def coordinator(ceph_coordinator):
    return ceph_coordinator


async def ready(api: Client, image: dict, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while image["status"] == "Downloading":
        assert time.monotonic() < deadline, image
        await asyncio.sleep(0.2)
        image = await api.get(f"/v1/images/{image['uuid']}")
    return image


@pytest.fixture(scope="module")
def storages(coordinator, token, ceph, image_dir):
    """bs-vol and ps-vol on the cluster, and the qcow2 imported from file:// as image `base`."""
    mon = f"root:pw@127.0.0.1/?monPort={ceph.mons['a'].v1_port}"

    async def setup() -> tuple[dict, dict, dict]:
        async with Client(coordinator.url, token) as api:
            bs = await api.post("/v1/ceph-backup-storage", {"name": "bs-vol", "monUrls": [mon]})
            ps = await api.post("/v1/ceph-primary-storage", {"name": "ps-vol", "monUrls": [mon]})
            image = await api.post(f"/v1/ceph-backup-storage/{bs['uuid']}/images",
                                   {"name": "base", "url": f"file://{image_dir}/small.qcow2"})
            return bs, ps, await ready(api, image)
    return asyncio.run(setup())


async def expect_error(coro, status: int, code: str, field: str | None = None) -> ApiClientError:
    with pytest.raises(ApiClientError) as e:
        await coro
    assert (e.value.status, e.value.code, e.value.field or field) == (status, code, field), e.value
    return e.value


async def test_file_import_lands_as_an_image_with_a_protected_snapshot(storages, cephagent):
    bs, _, image = storages
    assert image["status"] == "Ready" and image["size"] == IMAGE_SIZE and image["percent"] == 100
    assert image["pool"] == bs["pools"][0]["name"] and image["url"].startswith("file:///")
    async with CephAgentClient(cephagent.url, cephagent.token) as c:
        info = await c.image(image["pool"], image["rbd_image"])
        vol = await c.volume(image["pool"], image["rbd_image"])
    assert info.size == IMAGE_SIZE and info.snapshot == "base"
    assert [(s.name, s.protected) for s in vol.snapshots] == [("base", True)]


async def test_http_import_reports_progress_and_failures(api, storages, http_images):
    bs = storages[0]
    url = http_images.replace("http://", "http://user:hunter22@") + "/small.raw?sig=abc"
    image = await api.post(f"/v1/ceph-backup-storage/{bs['uuid']}/images", {"name": "web", "url": url,
                                                                            "format": "raw"})
    assert image["status"] == "Downloading" and image["task_id"]
    assert image["url"] == http_images + "/small.raw"  # no user info, no query: they may be credentials
    image = await ready(api, image)
    assert image["status"] == "Ready" and image["size"] == IMAGE_SIZE
    listed = await api.get("/v1/images", backupStorageUuid=bs["uuid"])
    assert {"base", "web"} <= {i["name"] for i in listed["images"]} and "hunter22" not in json.dumps(listed)
    bad = await api.post(f"/v1/ceph-backup-storage/{bs['uuid']}/images", {"name": "gone",
                                                                          "url": http_images + "/nothere.raw"})
    bad = await ready(api, bad)
    assert bad["status"] == "Failed" and "404" in bad["reason"]
    await api.delete(f"/v1/images/{bad['uuid']}")
    await api.delete(f"/v1/images/{image['uuid']}")
    await expect_error(api.get(f"/v1/images/{image['uuid']}"), 404, "not_found")


@pytest.mark.parametrize("task_id", [None, "forgotten-by-a-restarted-agent"])
async def test_any_read_carries_an_orphaned_import_forward(api, storages, etcd, token, image_dir, task_id):
    """A replica died after recording an import (before submitting it, or its agent restarted since):
    the next read of the image submits it again and follows it to Ready."""
    bs, image = storages[0], storages[2]
    uuid = ("a" if task_id else "b") * 32
    url = f"file://{image_dir}/small.raw"
    sealed = credentials.encrypt(SecretStr(secret_key(token)), url)
    orphan = {**image, "uuid": uuid, "name": f"orphan-{task_id}", "rbd_image": f"img-{uuid}", "status": "Downloading",
              "phase": "queued", "percent": None, "size": None, "task_id": task_id, "url": url,
              "task_host": "127.0.0.1" if task_id else None, "url_secret": sealed}
    store = Store(etcd.endpoint)
    await store.connect()
    try:
        await store.put(keys.image(uuid), orphan)
    finally:
        await store.close()
    done = await ready(api, await api.get(f"/v1/images/{uuid}"))
    assert done["status"] == "Ready" and done["size"] == IMAGE_SIZE and done["task_id"] != task_id
    assert done["backup_storage_uuid"] == bs["uuid"]
    await api.delete(f"/v1/images/{uuid}")


async def test_five_root_volumes_are_clones_sharing_the_image(api, storages, ceph, cephagent):
    _, ps, image = storages
    vols = await asyncio.gather(*(api.post("/v1/volumes", {"name": f"root{i}", "primaryStorageUuid": ps["uuid"],
                                                           "imageUuid": image["uuid"]}) for i in range(5)))
    root_pool = next(p["name"] for p in ps["pools"] if p["role"] == "rootVolume")
    for v in vols:
        assert v["type"] == "Root" and v["status"] == "Ready" and v["size"] == IMAGE_SIZE
        assert v["disk"] == {"kind": "rbd", "pool": root_pool, "image": v["rbd_image"], "user": "hsvms",
                             "monitors": [ceph.mons["a"].addr], "secret_uuid": ps["secret_uuid"],
                             "fsid": ceph.fsid}
        live = (await api.get(f"/v1/volumes/{v['uuid']}"))["rbd"]
        assert live["parent"] == {"pool": image["pool"], "image": image["rbd_image"], "snapshot": "base"}
        assert live["used"] == 0  # a clone owns no objects: nothing was copied
    async with CephAgentClient(cephagent.url, cephagent.token) as c:
        children = (await c.image(image["pool"], image["rbd_image"])).children
    assert sorted(children) == sorted(f"{root_pool}/{v['rbd_image']}" for v in vols)
    for v in vols:
        await api.delete(f"/v1/volumes/{v['uuid']}")


async def test_delete_order_is_enforced_with_clear_errors(api, storages, image_dir):
    bs, ps, _ = storages
    image = await ready(api, await api.post(f"/v1/ceph-backup-storage/{bs['uuid']}/images",
                                            {"name": "order", "url": f"file://{image_dir}/small.raw"}))
    a, b = [await api.post("/v1/volumes", {"name": n, "primaryStorageUuid": ps["uuid"], "imageUuid": image["uuid"]})
            for n in ("order-a", "order-b")]
    err = await expect_error(api.delete(f"/v1/images/{image['uuid']}"), 409, "has_dependants")
    assert "image order has 2 volume(s) cloned from it: order-a, order-b" in err.message
    err = await expect_error(api.delete(f"/v1/ceph-backup-storage/{bs['uuid']}"), 409, "in_use")
    assert "order" in err.message
    await expect_error(api.delete(f"/v1/ceph-primary-storage/{ps['uuid']}"), 409, "in_use")
    await api.post(f"/v1/volumes/{a['uuid']}/snapshots", {"name": "keep", "protect": True})
    err = await expect_error(api.delete(f"/v1/volumes/{a['uuid']}"), 409, "snapshot_protected")
    assert "volume order-a has protected snapshot(s) keep" in err.message
    assert (await api.get(f"/v1/volumes/{a['uuid']}", live="false"))["deleting"] is None  # VMs may take it again
    flat = await api.post(f"/v1/volumes/{b['uuid']}/flatten")
    assert flat["flattened"] and flat["rbd"]["parent"] is None and flat["rbd"]["used"] > 0
    err = await expect_error(api.delete(f"/v1/images/{image['uuid']}"), 409, "has_dependants")
    assert "order-a" in err.message and "order-b" not in err.message
    after = await api.delete(f"/v1/volumes/{a['uuid']}/snapshots/keep")
    assert after["snapshots"] == [] and after["rbd"]["snapshots"] == []
    for v in (a, b):
        await api.delete(f"/v1/volumes/{v['uuid']}")
    await api.delete(f"/v1/images/{image['uuid']}")
    await expect_error(api.get(f"/v1/volumes/{a['uuid']}"), 404, "not_found")


async def test_data_volumes_resize_and_snapshots(api, storages):
    ps = storages[1]
    await expect_error(api.post("/v1/volumes", {"name": "d", "primaryStorageUuid": ps["uuid"]}), 400, "invalid",
                       "size")
    d = await api.post("/v1/volumes", {"name": "data1", "primaryStorageUuid": ps["uuid"], "size": 32 * MiB})
    data_pool = next(p["name"] for p in ps["pools"] if p["role"] == "dataVolume")
    assert d["type"] == "Data" and d["disk"]["pool"] == data_pool
    assert (await api.post(f"/v1/volumes/{d['uuid']}/resize", {"size": 64 * MiB}))["size"] == 64 * MiB
    err = await expect_error(api.post(f"/v1/volumes/{d['uuid']}/resize", {"size": 16 * MiB}), 400, "invalid", "size")
    assert "allow_shrink" in err.message
    assert (await api.post(f"/v1/volumes/{d['uuid']}/resize", {"size": 16 * MiB, "allowShrink": True}))["size"] == \
        16 * MiB
    snap = await api.post(f"/v1/volumes/{d['uuid']}/snapshots", {"name": "s1"})
    assert [s["name"] for s in snap["snapshots"]] == ["s1"] and snap["rbd"]["snapshots"][0]["name"] == "s1"
    await api.post(f"/v1/volumes/{d['uuid']}/snapshots/s1/rollback")
    await expect_error(api.post(f"/v1/volumes/{d['uuid']}/snapshots/nope/rollback"), 404, "snapshot_not_found")
    await api.delete(f"/v1/volumes/{d['uuid']}")


async def test_root_volume_needs_the_same_cluster(api, storages, etcd):
    """An image of a backup storage in another cluster (recorded as such) cannot back a root volume."""
    ps, image = storages[1], storages[2]
    store = Store(etcd.endpoint)
    await store.connect()
    try:
        foreign = {**image, "uuid": "f" * 32, "name": "foreign", "fsid": "00000000-1111-2222-3333-444444444444",
                   "url_secret": "x"}
        await store.put(keys.image(foreign["uuid"]), foreign)
        before, _ = await store.list(keys.VOLUMES)
        err = await expect_error(api.post("/v1/volumes", {"name": "x", "primaryStorageUuid": ps["uuid"],
                                                          "imageUuid": foreign["uuid"]}), 409, "cluster_mismatch",
                                 "image_uuid")
        assert "Ceph backup storage works only with Ceph primary storage in the same cluster" in err.message
        assert (await store.list(keys.VOLUMES))[0] == before
        await expect_error(api.post("/v1/volumes", {"name": "x", "primaryStorageUuid": "nope", "imageUuid": "x"}),
                           400, "not_found", "primary_storage_uuid")
    finally:
        await store.delete(keys.image("f" * 32))
        await store.close()


async def test_a_vm_takes_the_volume_disk_and_keeps_it(api, storages):
    ps, image = storages[1], storages[2]
    vol = await api.post("/v1/volumes", {"name": "vm-root", "primaryStorageUuid": ps["uuid"],
                                         "imageUuid": image["uuid"]})
    disk = (await api.get(f"/v1/volumes/{vol['uuid']}", live="false"))["disk"]
    host = await api.post("/v1/hosts", {"name": "ceph-kvm", "address": "198.18.9.9"})
    vm = await api.post("/v1/vms", {"name": "on-rbd", "host_uuid": host["uuid"], "state": "Stopped",
                                    "root_volume": disk})
    assert vm["spec"]["volumes"][0]["disk"] == disk
    err = await expect_error(api.delete(f"/v1/volumes/{vol['uuid']}"), 409, "in_use")
    assert "attached to VM on-rbd" in err.message
    await api.post(f"/v1/volumes/{vol['uuid']}/snapshots", {"name": "s1"})
    await api.post(f"/v1/volumes/{vol['uuid']}/snapshots/s1/rollback")  # its VM is stopped
    await api.post(f"/v1/vms/{vm['uuid']}/actions", {"action": "start"})
    err = await expect_error(api.post(f"/v1/volumes/{vol['uuid']}/snapshots/s1/rollback"), 409, "invalid_state")
    assert err.message == "volume vm-root belongs to VM on-rbd, which is Running: stop it first to revert it to " \
        "snapshot s1"  # as a file volume's: the disk is not rewritten under the guest
    await api.delete(f"/v1/vms/{vm['uuid']}")
    await api.delete(f"/v1/volumes/{vol['uuid']}")
    await api.delete(f"/v1/hosts/{host['uuid']}")


def hs(coordinator, token, *args, check=True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "coordinator.cli", "--url", coordinator.url, f"--token={token}", *args],
                       capture_output=True, text=True, timeout=120)
    if check and p.returncode:
        raise AssertionError(p.stderr)
    return p


def test_cli_ceph_round_trip(coordinator, token, storages, image_dir, ceph):
    p = hs(coordinator, token, "ceph", "import-image", "bs-vol", "cli-img", f"file://{image_dir}/small.qcow2")
    assert "status: Ready" in p.stdout
    frames = [f.rstrip() for f in p.stderr.splitlines() if f.strip()]  # text mode turns the bar's \r into \n
    assert frames[0].startswith("cli-img [") and frames[-1] == f"cli-img [{'#' * 30}]  100.0% Ready"
    vol = json.loads(hs(coordinator, token, "--json", "ceph", "create-volume", "ps-vol", "cli-root", "--image",
                        "cli-img").stdout)
    assert vol["type"] == "Root" and vol["disk"]["kind"] == "rbd"
    assert "size: 128 MiB" in hs(coordinator, token, "ceph", "resize", "cli-root", "128M").stdout
    hs(coordinator, token, "ceph", "snapshot", "cli-root", "s1", "--protect")
    p = hs(coordinator, token, "ceph", "delete-volume", "cli-root", check=False)
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [
        "hs: volume cli-root has protected snapshot(s) s1; delete those snapshots first"]
    hs(coordinator, token, "ceph", "delete-snapshot", "cli-root", "s1")
    assert "flattened: True" in hs(coordinator, token, "ceph", "flatten", "cli-root").stdout
    deleted = hs(coordinator, token, "ceph", "delete-volume", "cli-root").stdout
    assert deleted == f"deleted volume cli-root ({vol['uuid']})\n"
    table = hs(coordinator, token, "ceph", "list").stdout
    assert "bs-vol" in table and "ps-vol" in table and "CephPrimaryStorage" in table and "Connected" in table
    shown = hs(coordinator, token, "ceph", "show", "bs-vol").stdout
    assert f"fsid: {ceph.fsid}" in shown and "root:***@127.0.0.1" in shown and ":pw@" not in shown
    assert "cli-img" in hs(coordinator, token, "ceph", "images").stdout
    hs(coordinator, token, "ceph", "delete-image", "cli-img")
    p = hs(coordinator, token, "ceph", "add-backup-storage", "x", "--mon-url", "root@127.0.0.1", check=False)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
    assert "(argument --mon-url, field mon_urls)" in p.stderr
    p = hs(coordinator, token, "ceph", "add-mon", "ps-vol", "--mon-url",
           f"root:pw@127.0.0.1/?monPort={ceph.mons['a'].v1_port}", check=False)
    assert p.returncode == 1 and "already has mon" in p.stderr and "(argument --mon-url, field mon_urls)" in p.stderr
