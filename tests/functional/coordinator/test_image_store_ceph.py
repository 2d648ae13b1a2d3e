"""Image store images on Ceph primary storage (the seeds' "Ceph primary storage works with SFTP and Ceph
backup storage"), against a real cluster, a real cephagent, a real image store and a real coordinator:
the first volume imports the image into the storage's image-cache pool (once, also when two volumes ask at
the same time), every volume after is a clone; data volumes from a DataVolumeTemplate; a forced delete of
an image in use leaves its copy until its last volume is gone."""

from __future__ import annotations

import asyncio
import time

import pytest

from cephagent.client import CephAgentClient
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
def coordinator(run, etcd, token, cephagent, store_port):
    c = Coordinator(run, etcd, token, name="coord-store-ceph", cephagent_port=cephagent.port,
                    cephagent_token=cephagent.token, imagestore_port=store_port).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def lab(run, coordinator, token, store_port, image_dir, ceph):
    """An image store `is-ceph` with `root-img` (small.qcow2) and `data-img` (small.raw, a DataVolumeTemplate),
    and Ceph primary storage `ps-store`."""
    mon = f"root:pw@127.0.0.1/?monPort={ceph.mons['a'].v1_port}"

    async def setup() -> tuple[ImageStoreProcess, dict, dict, dict]:
        async with Client(coordinator.url, token) as api:
            host = await api.post("/v1/hosts", {"name": "store-ceph", "address": "127.0.0.1", "kind": "imagestore"})
            agent = ImageStoreProcess(run, run.path("store-ceph"), "127.0.0.1", store_port, file_roots=[image_dir],
                                      token=host["token"]).start()
            await api.post("/v1/image-stores", {"name": "is-ceph", "host": "store-ceph"})
            ps = await api.post("/v1/ceph-primary-storage", {"name": "ps-store", "mon_urls": [mon]})
            images = []
            for name, file, media in (("root-img", "small.qcow2", None),
                                      ("data-img", "small.raw", "DataVolumeTemplate")):
                image = await api.post("/v1/images", {"name": name, "url": f"file://{image_dir}/{file}",
                                                      "backup_storage_uuid": "is-ceph", "media_type": media})
                while image["status"] == "Downloading":
                    await asyncio.sleep(0.1)
                    image = await api.get(f"/v1/images/{image['uuid']}")
                images.append(image)
            return agent, ps, images[0], images[1]
    agent, ps, root_img, data_img = asyncio.run(setup())
    yield agent, ps, root_img, data_img
    agent.stop()


def imports(agent: ImageStoreProcess, image: dict) -> int:
    """How often the store served the image to Ceph (every read is logged with its reader)."""
    return sum(1 for line in agent.log().splitlines() if '"serving image"' in line and image["uuid"] in line
               and '"caller": "ceph:' in line)


async def test_an_image_store_image_is_copied_once_then_cloned(api, lab, cephagent):
    agent, ps, image, _ = lab
    body = {"primary_storage_uuid": ps["uuid"], "image_uuid": image["uuid"]}
    first, second = await asyncio.gather(api.post("/v1/volumes", {**body, "name": "r1"}),
                                         api.post("/v1/volumes", {**body, "name": "r2"}))
    t = time.perf_counter()
    third = await api.post("/v1/volumes", {**body, "name": "r3", "size": 128 * MiB})
    clone_ms = (time.perf_counter() - t) * 1000
    assert imports(agent, image) == 1 and clone_ms < 5000
    cache_pool = next(p["name"] for p in ps["pools"] if p["role"] == "imageCache")
    for vol in (first, second, third):
        parent = vol["rbd"]["parent"]
        assert (vol["type"], vol["status"]) == ("Root", "Ready")
        assert (parent["pool"], parent["image"], parent["snapshot"]) == (cache_pool, f"img-{image['uuid']}", "base")
    assert third["size"] == 128 * MiB
    async with CephAgentClient(cephagent.url, cephagent.token) as c:
        copy = await c.image(cache_pool, f"img-{image['uuid']}")
        assert copy.size == 64 * MiB and len(copy.children) == 3
        disk = first["disk"]
        data = await c.volume(disk["pool"], disk["image"])
        assert data.used == 0  # a clone owns nothing yet: no byte was copied
    for vol in (first, second, third):
        await api.delete(f"/v1/volumes/{vol['uuid']}")


async def test_data_volumes_come_from_data_volume_templates(api, lab):
    _, ps, root_img, data_img = lab
    vol = await api.post("/v1/volumes", {"name": "d1", "primary_storage_uuid": ps["uuid"], "type": "Data",
                                         "image_uuid": data_img["uuid"]})
    data_pool = next(p["name"] for p in ps["pools"] if p["role"] == "dataVolume")
    assert (vol["type"], vol["disk"]["pool"]) == ("Data", data_pool)
    for body, message in [({"image_uuid": data_img["uuid"]}, "a root volume comes from a RootVolumeTemplate"),
                          ({"image_uuid": root_img["uuid"], "type": "Data"},
                           "a data volume comes from a DataVolumeTemplate")]:
        with pytest.raises(ApiClientError, match=message) as e:
            await api.post("/v1/volumes", {"name": "bad", "primary_storage_uuid": ps["uuid"], **body})
        assert (e.value.status, e.value.field) == (400, "image_uuid")
    await api.delete(f"/v1/volumes/{vol['uuid']}")


async def test_a_forced_delete_leaves_the_copy_until_its_last_volume_goes(api, lab, cephagent, image_dir):
    agent, ps, _, _ = lab
    image = await api.post("/v1/images", {"name": "doomed", "url": f"file://{image_dir}/small.qcow2",
                                          "backup_storage_uuid": "is-ceph"})
    while image["status"] == "Downloading":
        await asyncio.sleep(0.1)
        image = await api.get(f"/v1/images/{image['uuid']}")
    vol = await api.post("/v1/volumes", {"name": "v-doomed", "primary_storage_uuid": ps["uuid"],
                                         "image_uuid": image["uuid"]})
    with pytest.raises(ApiClientError, match="used by 1 volume") as e:
        await api.delete(f"/v1/images/{image['uuid']}")
    assert e.value.status == 409
    await api.delete(f"/v1/images/{image['uuid']}", force="true")
    assert agent.get(f"/v1/images/{image['uuid']}")[0] == 404  # gone from the store
    cache_pool = next(p["name"] for p in ps["pools"] if p["role"] == "imageCache")
    async with CephAgentClient(cephagent.url, cephagent.token) as c:
        assert (await c.image(cache_pool, f"img-{image['uuid']}")).children  # the copy stays for its volume
        await api.delete(f"/v1/volumes/{vol['uuid']}")
        with pytest.raises(Exception, match="does not exist"):
            await c.image(cache_pool, f"img-{image['uuid']}")


async def test_an_image_of_a_volume_is_a_clone_and_gives_back_its_snapshot(api, lab, ceph, cephagent):
    _, ps, image, _ = lab
    mon = f"root:pw@127.0.0.1/?monPort={ceph.mons['a'].v1_port}"
    bs = await api.post("/v1/ceph-backup-storage", {"name": "bs-store", "mon_urls": [mon]})
    vol = await api.post("/v1/volumes", {"name": "golden", "primary_storage_uuid": ps["uuid"],
                                         "image_uuid": image["uuid"]})
    made = await api.post("/v1/images", {"name": "golden-img", "volume_uuid": vol["uuid"],
                                         "backup_storage_uuid": "bs-store"})
    assert (made["status"], made["media_type"], made["size"]) == ("Ready", "RootVolumeTemplate", 64 * MiB)
    assert made["source_volume_uuid"] == vol["uuid"] and made["pool"] == bs["pools"][0]["name"]
    source = await api.get(f"/v1/volumes/{vol['uuid']}")
    assert [(s["name"], s["protected"]) for s in source["snapshots"]] == [(f"img-{made['uuid']}", True)]
    child = await api.post("/v1/volumes", {"name": "from-golden", "primary_storage_uuid": ps["uuid"],
                                           "image_uuid": made["uuid"]})
    assert child["rbd"]["parent"]["image"] == made["rbd_image"]
    async with CephAgentClient(cephagent.url, cephagent.token) as c:
        assert (await c.volume(made["pool"], made["rbd_image"])).used == 0  # a clone of the volume: nothing copied
    with pytest.raises(ApiClientError) as e:
        await api.post("/v1/images", {"name": "x", "volume_uuid": vol["uuid"], "backup_storage_uuid": "is-ceph"})
    assert (e.value.status, e.value.field) == (400, "backup_storage_uuid")
    with pytest.raises(ApiClientError, match="give either url or volume_uuid"):
        await api.post("/v1/images", {"name": "x", "backup_storage_uuid": "bs-store"})
    with pytest.raises(ApiClientError, match="has 1 volume"):
        await api.delete(f"/v1/images/{made['uuid']}")
    await api.delete(f"/v1/volumes/{child['uuid']}")
    await api.delete(f"/v1/images/{made['uuid']}")
    assert (await api.get(f"/v1/volumes/{vol['uuid']}"))["snapshots"] == []  # given back with the image
    await api.delete(f"/v1/volumes/{vol['uuid']}")
    await api.delete(f"/v1/ceph-backup-storage/{bs['uuid']}")
