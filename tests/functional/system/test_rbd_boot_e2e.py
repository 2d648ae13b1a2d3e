"""A VM boots from a copy-on-write RBD root volume: Ceph storage through the coordinator API, the image
imported and cloned by the cephagent, the libvirt secret and the `<disk type='network'>` made by the
real kvmagent, the tiny guest's bootable disk under qemu, DHCP and metadata from flatnet.

The one-node cluster listens on root-namespace loopback; the simulated host reaches its mon and OSD
through portals on the same loopback ports inside the host namespace (as a real host reaches Ceph's
public network).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import pytest

from coordinator.client import Client
from testbed import guest_image
from testbed.ceph import CephCluster
from testbed.kvmhost import KvmHost
from testbed.switch import Switch

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def image():
    return guest_image.build()


@pytest.fixture(scope="module")
def cephagent_file_roots(image):
    return [image.disk.parent]


@pytest.fixture(scope="module")
def coordinator(ceph_coordinator):
    return ceph_coordinator


def ceph_ports(ceph: CephCluster) -> set[int]:
    """Every loopback port a Ceph client talks to: the mon's and the OSD's public addresses."""
    ports = {ceph.mons["a"].v1_port, ceph.mons["a"].v2_port}
    for osd in json.loads(ceph.mon_command("osd dump"))["osds"]:
        ports |= {int(a["addr"].rsplit(":", 1)[1]) for a in osd["public_addrs"]["addrvec"]}
    return ports


async def ready(api: Client, image: dict, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while image["status"] == "Downloading":
        assert time.monotonic() < deadline, image
        await asyncio.sleep(0.5)
        image = await api.get(f"/v1/images/{image['uuid']}")
    assert image["status"] == "Ready", image
    return image


async def test_tiny_guest_boots_from_a_cloned_rbd_root_volume(run, coordinator, token, ceph, image):
    host = KvmHost(run, Switch(run), "rbdhv")
    for port in ceph_ports(ceph):
        run.popen([sys.executable, "-m", "testbed.portal", host.ns.name, str(port), str(port)],
                  log_name=f"ceph-portal-{port}")
    mon = f"root:pw@127.0.0.1/?monPort={ceph.mons['a'].v1_port}"
    try:
        async with Client(coordinator.url, token) as api:
            await host.register(api)
            host.start(coordinator)
            bs = await api.post("/v1/ceph-backup-storage", {"name": "bs-boot", "monUrls": [mon]})
            ps = await api.post("/v1/ceph-primary-storage", {"name": "ps-boot", "monUrls": [mon]})
            img = await ready(api, await api.post(f"/v1/ceph-backup-storage/{bs['uuid']}/images", {
                "name": "tiny", "url": f"file://{image.disk}", "format": "raw"}))
            vol = await api.post("/v1/volumes", {"name": "root-1", "primaryStorageUuid": ps["uuid"],
                                                 "imageUuid": img["uuid"]})
            net = run.subnet()
            l2 = await api.post("/v1/l2-networks", {"name": "rbd-data", "physical_interface": "eth1"})
            l3 = await api.post("/v1/l3-networks", {
                "name": "rbd-flat", "l2_uuid": l2["uuid"], "cidr": str(net), "gateway": str(net[1]),
                "ip_ranges": [{"start": str(net[10]), "end": str(net[50])}], "services": ["DHCP", "Userdata"]})
            vm = await api.post("/v1/vms", {
                "name": "rbd-guest", "host_uuid": host.uuid, "l3_network_uuids": [l3["uuid"]],
                "root_volume": vol["disk"], "system_tags": ["userdata::booted from rbd"]}, wait="90")
            assert vm["observed"]["state"] == "Running", vm
            xml = host.libvirt.virsh("dumpxml", vm["uuid"])
            assert "protocol='rbd'" in xml and vol["disk"]["secret_uuid"] in xml
            serial = host.libvirt.dir / "serial" / f"{vm['uuid']}.log"
            deadline = time.monotonic() + 120
            while "HS-USERDATA-END" not in (text := serial.read_text(errors="replace") if serial.exists() else ""):
                assert time.monotonic() < deadline, f"guest did not boot from RBD:\n{text}"
                await asyncio.sleep(1)
            assert "boot=disk" in text and "booted from rbd" in text
    finally:
        host.close()
