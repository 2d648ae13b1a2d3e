"""VMs from images on file-based primary storage, through the whole system: images added to a real image
store on a host of its own from an HTTP server in a namespace (one with its sha256 and md5 checked, one
with a wrong sha256 refused, leaving nothing), a real coordinator on etcd, a simulated KVM host (the real
agent with its flat network services, its libvirtd) with a LocalStorage: the VM boots from its root volume
(an overlay on the host's cached copy) and prints its user-data; a second VM on the host reuses the cached
image (the store's log shows one read by the host, the web server's one download by the store); an ISO
image is attached to a running VM by uuid (the guest reads it, the boot order stays) and a VM installed
from an ISO image boots CdRom first, HardDisk after its installer rebooted (seed 1.0); the same image on a
SharedMountPoint that two more hosts mount (kvm2, kvm3, each in its own mount namespace): one copy in the
storage's cache for both hosts' VMs, then kvm3 loses the mount (the API shows it, its VM fails to start
naming the host and the path) and recovers when it is mounted again; an image a volume depends on is
deleted only by force, and its cached copy stays under the volume.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import shutil
import sys
import time
import urllib.request

import pytest

from coordinator.client import ApiClientError, Client
from testbed import guest_image
from testbed.apiwait import until
from testbed.coordinators import Coordinator
from testbed.guest_image import make_data_iso
from testbed.imagecloud import add_image, image_store, local_storage
from testbed.imagestore import ImageStoreProcess
from testbed.kvmhost import KvmHost, mounting_hosts
from testbed.ports import free_port
from testbed.switch import Switch

pytestmark = [pytest.mark.real, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def store_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def coordinator(run, etcd, token, store_port):
    c = Coordinator(run, etcd, token, name="coord-vmimage", imagestore_port=store_port, heartbeat_timeout=3).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def cloud(run, coordinator, token, store_port):
    """The image store `images` (tiny guest disk with its checksums, a data ISO, the installer ISO; a copy
    with a wrong sha256 refused), LocalStorage `local`, an L3 with DHCP and user-data, and host kvm1."""
    guest = guest_image.build()
    www = run.path("www")
    www.mkdir()
    for src, name in ((guest.disk, "tiny.raw"), (guest.iso, "install.iso")):
        shutil.copy(src, www / name)
    make_data_iso(www / "data.iso", "hs-data-by-uuid")
    web, inner = free_port(), 8000  # the web server in a namespace of its own, reached through a portal
    run.netns("www").popen([sys.executable, "-m", "http.server", str(inner), "--bind", "127.0.0.1",
                            "--directory", str(www)], log_name="www")
    run.popen([sys.executable, "-m", "testbed.portal", "--into", f"{run.prefix}-www", str(web), str(inner),
               "127.0.0.1"], log_name="www-portal")
    serving(f"http://127.0.0.1:{web}/")
    kvm = KvmHost(run, Switch(run), "kvm1")
    tiny = (www / "tiny.raw").read_bytes()

    async def setup() -> tuple[ImageStoreProcess, dict, dict]:
        async with Client(coordinator.url, token) as api:
            store = await image_store(api, run, "images", store_port)
            bad = await add_image(api, "images", "tiny-bad", f"http://127.0.0.1:{web}/tiny.raw", sha256="0" * 64)
            assert bad["status"] == "Failed" and bad["reason"].startswith("checksum_mismatch"), bad
            assert not [p for p in store.root.rglob("*") if bad["uuid"] in p.name], "a refused image left bytes"
            images = {"tiny": await add_image(api, "images", "tiny", f"http://127.0.0.1:{web}/tiny.raw",
                                              sha256=hashlib.sha256(tiny).hexdigest(),
                                              md5=hashlib.md5(tiny).hexdigest())}  # noqa: S324 (the seeds' md5)
            for name in ("data", "install"):
                images[name] = await add_image(api, "images", name, f"http://127.0.0.1:{web}/{name}.iso",
                                               media_type="ISO")
            assert [i["status"] for i in images.values()] == ["Ready"] * 3, images
            await kvm.register(api)
            kvm.relay(store_port)  # the host reads the store at 127.0.0.1:<port>, as its tickets say
            kvm.start(coordinator)
            await local_storage(api, "local", run.path("local"), kvm)
            net = run.subnet()
            l2 = await api.post("/v1/l2-networks", {"name": "data", "physical_interface": "eth1"})
            l3 = await api.post("/v1/l3-networks", {
                "name": "flat", "l2_uuid": l2["uuid"], "cidr": str(net), "gateway": str(net[1]),
                "ip_ranges": [{"start": str(net[10]), "end": str(net[200])}], "services": ["DHCP", "Userdata"]})
            return store, images, l3
    store, images, l3 = asyncio.run(setup())
    yield kvm, store, images, l3
    kvm.close()
    store.stop()


def serving(url: str, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):  # noqa: S310 (the test's server)
            return
        assert time.monotonic() < end, f"nothing serves {url}"
        time.sleep(0.1)


def downloads(run, name: str) -> int:
    """GETs of `name` in the web server's access log."""
    return run.path("www.log").read_text().count(f'"GET /{name} ')


@pytest.fixture(scope="module")
def smp_hosts(run, coordinator, token, store_port, cloud):
    """kvm2 and kvm3, each with the same directory bind-mounted at `smp` in its own mount namespace (its
    libvirtd's, which its agent shares): a shared filesystem as two hosts see it."""
    backing, smp = run.path("smp-backing"), run.path("smp")
    backing.mkdir()
    smp.mkdir()
    hosts = mounting_hosts(run, coordinator, token, ["kvm2", "kvm3"], [(backing, smp)], switch="swsmp")
    for h in hosts:
        h.relay(store_port)
    yield hosts, backing, smp
    for h in hosts:
        h.close()


def serial(kvm: KvmHost, vm: dict) -> str:
    path = kvm.libvirt.dir / "serial" / f"{vm['uuid']}.log"
    return path.read_text(errors="replace") if path.exists() else ""


async def until_serial(kvm: KvmHost, vm: dict, pattern: str, timeout: float = 150) -> re.Match[str]:
    end = time.monotonic() + timeout
    while not (found := re.search(pattern, serial(kvm, vm))):
        assert time.monotonic() < end, f"no {pattern!r} in:\n{serial(kvm, vm)[-2000:]}"
        await asyncio.sleep(0.5)
    return found


async def running(api: Client, vm: dict, timeout: float = 150) -> dict:
    """The VM once its host reports it Running (its root volume, and so its image, is there first)."""
    end = time.monotonic() + timeout
    while (vm["observed"] or {}).get("state") != "Running":
        assert time.monotonic() < end, f"VM {vm['spec']['name']} never ran: {vm['observed']}"
        await asyncio.sleep(0.5)
        vm = await api.get(f"/v1/vms/{vm['uuid']}")
    return vm


def reads(store: ImageStoreProcess, image: dict, kvm: KvmHost) -> int:
    """How often the store served the image to the host (it logs every read with its reader)."""
    return sum(1 for line in store.log().splitlines() if '"serving image"' in line and image["uuid"] in line
               and f"host:{kvm.uuid}" in line)


async def test_vms_from_an_image_boot_from_one_cached_copy(api, cloud, run):
    kvm, store, images, l3 = cloud
    tiny = images["tiny"]
    vms = []
    for name in ("web1", "web2"):
        vm = await running(api, await api.post("/v1/vms", {
            "name": name, "image_uuid": tiny["uuid"], "l3_network_uuids": [l3["uuid"]], "root_size": 128 << 20,
            "system_tags": [f"userdata::hello-from-{name}"]}))
        root = vm["spec"]["volumes"][0]
        assert root["role"] == "root" and root["disk"]["kind"] == "volume"
        vol = await api.get(f"/v1/volumes/{root['uuid']}")
        assert (vol["image_uuid"], vol["size"], vol["type"]) == (tiny["uuid"], 128 << 20, "Root")
        vms.append(vm)
    for vm in vms:
        await until_serial(kvm, vm, r"HS-INIT-START boot=disk")
        found = await until_serial(kvm, vm, r"HS-USERDATA-BEGIN\s*(.*?)\s*HS-USERDATA-END")
        assert found.group(1) == f"hello-from-{vm['spec']['name']}"
    assert reads(store, tiny, kvm) == 1  # one download: the second VM's root is an overlay on the cached copy
    assert downloads(run, "tiny.raw") == 2  # the refused copy and the image: the store never fetched it again
    for vm in vms:
        await api.delete(f"/v1/vms/{vm['uuid']}", wait="30")


async def test_an_image_of_a_stopped_vms_root_volume_boots_a_new_vm(api, cloud, run):
    kvm, store, images, _ = cloud
    vm = await running(api, await api.post("/v1/vms", {"name": "golden", "image_uuid": images["tiny"]["uuid"]}))
    root = vm["spec"]["volumes"][0]["uuid"]
    with pytest.raises(ApiClientError) as running_vm:
        await api.post("/v1/images", {"name": "golden", "volume_uuid": root, "backup_storage_uuid": "images"})
    assert (running_vm.value.status, running_vm.value.code) == (409, "invalid_state")
    await api.post(f"/v1/volumes/{root}/snapshots", {"name": "s1"})  # of a snapshot: while the VM runs
    of_snap = await api.post("/v1/images", {"name": "golden-s1", "volume_uuid": root, "snapshot": "s1",
                                            "backup_storage_uuid": "images"})
    of_snap = await until(lambda: api.get(f"/v1/images/{of_snap['uuid']}"), lambda i: i["status"] != "Downloading")
    assert (of_snap["status"], of_snap["source_snapshot"]) == ("Ready", "s1"), of_snap
    with pytest.raises(ApiClientError) as sent:
        await api.post(f"/v1/images/{of_snap['uuid']}/upload-tickets")
    assert (sent.value.status, sent.value.code) == (409, "invalid_state")  # nothing more to send
    await api.post(f"/v1/vms/{vm['uuid']}/actions", {"action": "stop"}, wait="30")
    image = await api.post("/v1/images", {"name": "golden", "volume_uuid": root, "backup_storage_uuid": "images"})
    assert (image["status"], image["source_volume_uuid"]) == ("Downloading", root)
    image = await until(lambda: api.get(f"/v1/images/{image['uuid']}"), lambda i: i["status"] != "Downloading")
    assert (image["status"], image["format"], image["media_type"]) == ("Ready", "qcow2", "RootVolumeTemplate"), image
    assert '"image uploaded"' in store.log() and f"host:{kvm.uuid}" in store.log()
    await until(lambda: api.get(f"/v1/volumes/{root}"), lambda v: not v["exports"] and not (run.path("local") /
                "exports" / f"{image['uuid']}.qcow2").exists())  # sent: the host removed its copy
    copy = await running(api, await api.post("/v1/vms", {"name": "from-golden", "image_uuid": image["uuid"]}))
    await until_serial(kvm, copy, r"HS-INIT-START boot=disk")
    for v in (vm, copy):
        await api.delete(f"/v1/vms/{v['uuid']}", wait="30")
    for i in (image, of_snap):
        await api.delete(f"/v1/images/{i['uuid']}")


async def test_iso_images_by_uuid_and_the_seed_boot_order(api, cloud):
    kvm, store, images, l3 = cloud
    vm = await running(api, await api.post("/v1/vms", {"name": "iso-live", "image_uuid": images["tiny"]["uuid"]}))
    await until_serial(kvm, vm, r"HS-CDROM content=empty")
    shown = await api.put(f"/v1/vms/{vm['uuid']}/cdrom", {"iso_uuid": images["data"]["uuid"]})
    assert shown["spec"]["boot_order"] == ["HardDisk"]  # attaching an ISO never changes the boot order
    await until_serial(kvm, vm, r"HS-CDROM content=hs-data-by-uuid", timeout=60)
    await api.put(f"/v1/vms/{vm['uuid']}/cdrom", {})
    await until_serial(kvm, vm, r"HS-CDROM content=hs-data-by-uuid[\s\S]*HS-CDROM content=empty", timeout=60)

    inst = await running(api, await api.post("/v1/vms", {"name": "installed", "iso_uuid": images["install"]["uuid"],
                                                         "root_size": 64 << 20}))
    assert inst["spec"]["boot_order"] == ["CdRom", "HardDisk"] and inst["observed"]["boot_order"] == ["CdRom",
                                                                                                      "HardDisk"]
    await until_serial(kvm, inst, r"HS-INIT-START boot=cdrom action=reboot")
    end = time.monotonic() + 150
    while (await api.get(f"/v1/vms/{inst['uuid']}"))["observed"]["boot_order"] != ["HardDisk", "CdRom"]:
        assert time.monotonic() < end, "the boot order never switched to HardDisk after the installer rebooted"
        await asyncio.sleep(1)
    for v in (vm, inst):
        await api.delete(f"/v1/vms/{v['uuid']}", wait="30")


async def test_vms_from_an_image_on_a_shared_mount_point_and_a_lost_mount(api, cloud, smp_hosts):
    kvm, store, images, _ = cloud
    (h2, h3), backing, smp = smp_hosts
    tiny = images["tiny"]
    await api.post("/v1/primary-storage", {"name": "shared", "type": "SharedMountPoint", "url": str(smp),
                                           "host_uuids": [h2.uuid, h3.uuid]})
    both = sorted([h2.uuid, h3.uuid])
    await until(lambda: api.get("/v1/primary-storage/shared"),
                lambda ps: all(sorted((ps["hosts"].get(h) or {}).get("peers") or []) == both for h in both))
    vms = []
    for h in (h2, h3):  # one after the other: the second finds the image in the shared cache
        vm = await running(api, await api.post("/v1/vms", {"name": f"smp-{h.name}", "image_uuid": tiny["uuid"],
                                                           "primary_storage_uuid": "shared", "host_uuid": h.uuid}))
        await until_serial(h, vm, r"HS-INIT-START boot=disk")
        vms.append(vm)
    assert reads(store, tiny, h2) + reads(store, tiny, h3) == 1  # one copy for the storage, not one per host
    assert [p.name for p in (backing / "images").iterdir() if p.name == tiny["uuid"]] == [tiny["uuid"]]

    # kvm3 loses the mount: the API shows it, and the VM there fails to start naming the host and the path
    await api.post(f"/v1/vms/{vms[1]['uuid']}/actions", {"action": "stop"}, wait="30")
    h3.mount("-u", str(smp))
    message = f"{smp} on host kvm3 is not mounted"
    down = await until(lambda: api.get("/v1/primary-storage/shared"),
                       lambda ps: ps["hosts"][h3.uuid]["state"] == "Unavailable")
    assert message in down["hosts"][h3.uuid]["error"] and down["hosts"][h2.uuid]["state"] == "Ready"
    await api.post(f"/v1/vms/{vms[1]['uuid']}/actions", {"action": "start"})
    failed = await until(lambda: api.get(f"/v1/vms/{vms[1]['uuid']}"),
                         lambda v: message in ((v["observed"] or {}).get("error") or ""))
    assert failed["observed"]["state"] != "Running"
    assert (await api.get(f"/v1/vms/{vms[0]['uuid']}"))["observed"]["state"] == "Running"  # kvm2 unaffected
    h3.mount("--bind", str(backing), str(smp))
    await running(api, await api.get(f"/v1/vms/{vms[1]['uuid']}"))  # remounted: it starts by itself
    for vm in vms:
        await api.delete(f"/v1/vms/{vm['uuid']}", wait="30")


async def test_an_image_in_use_is_deleted_only_by_force_and_its_cached_copy_stays(api, cloud, run):
    kvm, store, images, _ = cloud
    tiny = images["tiny"]
    vol = await api.post("/v1/volumes", {"name": "from-tiny", "primary_storage_uuid": "local",
                                         "image_uuid": tiny["uuid"], "host_uuid": kvm.uuid})
    vol = await until(lambda: api.get(f"/v1/volumes/{vol['uuid']}"), lambda v: v["status"] == "Ready")
    with pytest.raises(ApiClientError) as refused:
        await api.delete(f"/v1/images/{tiny['uuid']}")
    assert (refused.value.status, refused.value.code) == (409, "in_use") and "from-tiny" in refused.value.message
    await api.delete(f"/v1/images/{tiny['uuid']}", force="true")
    with pytest.raises(ApiClientError) as gone:
        await api.get(f"/v1/images/{tiny['uuid']}")
    assert gone.value.status == 404
    assert store.get(f"/v1/images/{tiny['uuid']}")[0] == 404
    cached = run.path("local") / "images" / tiny["uuid"]
    assert (cached / f"image.{tiny['format']}").is_file()
    assert (await api.get(f"/v1/volumes/{vol['uuid']}"))["status"] == "Ready"  # its backing file stays
    await api.delete(f"/v1/volumes/{vol['uuid']}")
