"""One object's bad data never stops the flat services of the others (issue 13, finding 9).

Before: the same MAC on two L2s (a bad `fixed_macs`, or a 24-bit `fa:16:3e` collision) made the metadata
steering map, keyed by MAC, refuse the whole nft table ("File exists"); every apply failed before the
metadata server was updated, so changed user-data was never served on that host. And a NIC whose
address is not an address took its L3's namespace down with it.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from agentkit.addr import METADATA_ADDRESS
from agentkit.model import L2Spec, L3Spec, NicSpec, Service, VmSpec
from testbed import nshttp
from testbed.guestlab import GuestLab

pytestmark = pytest.mark.real
MAC = "52:54:00:dd:00:01"


def vm(name: str, l3: L3Spec, ip: str, mac: str, userdata: str | None = None, nic_uuid: str | None = None) -> VmSpec:
    nic = NicSpec(uuid=nic_uuid or uuid.uuid4().hex, l3_uuid=l3.uuid, mac=mac, ip=ip, default=True)
    return VmSpec(uuid=uuid.uuid4().hex, name=name, nics=[nic], userdata=userdata)


@pytest.fixture(scope="module")
def lab(run):
    lab = GuestLab.create(run, "b")
    second = L2Spec(uuid=uuid.uuid4().hex, name="second", physical_interface="eth1")
    lab.host.add_bridge(second)
    net = run.subnet()
    l3b = L3Spec(uuid=uuid.uuid4().hex, name="b", l2_uuid=second.uuid, cidr=str(net), domain="b.test",
                 services=[Service.DHCP, Service.USERDATA], dhcp_address=str(net.network_address + 2))
    base = lab.l3.network.network_address
    vms = {"x": vm("x", lab.l3, str(base + 10), MAC), "y": vm("y", l3b, str(net.network_address + 10), MAC),
           "z": vm("z", lab.l3, str(base + 12), "52:54:00:dd:00:03", "#cloud-config\n# v1\n"),
           "broken": vm("broken", lab.l3, "not-an-address", "52:54:00:dd:00:04")}
    lab.vms.update(vms)
    lab.start()
    for role, l3, l2 in (("x", lab.l3, lab.l2), ("y", l3b, second), ("z", lab.l3, lab.l2)):
        lab.ns[role] = lab.plug(role, vms[role].nics[0], l3, l2.bridge)
    yield lab, l3b, second
    lab.close()


def apply(lab: GuestLab, l3b: L3Spec, second: L2Spec) -> dict:
    return lab.apply([lab.l3, l3b], list(lab.vms.values()), [lab.l2, second])


async def test_a_mac_on_two_l2s_and_a_broken_nic_leave_everyone_else_served(lab):
    lab, l3b, second = lab
    apply(lab, l3b, second)  # raises if the service failed
    for role in ("x", "y"):  # the two NICs sharing a MAC both get their own lease and data
        lease = await asyncio.get_running_loop().run_in_executor(None, lab.ns[role].udhcpc)
        assert lease is not None and lease.ip == lab.vms[role].nics[0].ip
        reply = await nshttp.request(lab.ns[role].ns.name, METADATA_ADDRESS, "/latest/meta-data/instance-id")
        assert (reply.status, reply.text) == (200, lab.vms[role].uuid)
    z = lab.ns["z"].ns.name
    assert (await nshttp.request(z, METADATA_ADDRESS, "/latest/user-data")).text == "#cloud-config\n# v1\n"
    lab.vms["z"] = lab.vms["z"].model_copy(update={"userdata": "#cloud-config\n# v2\n"})
    t0 = time.monotonic()
    apply(lab, l3b, second)
    assert (await nshttp.request(z, METADATA_ADDRESS, "/latest/user-data")).text == "#cloud-config\n# v2\n"
    assert time.monotonic() - t0 < 2


async def test_a_tap_claimed_by_two_nics_is_left_out_of_the_rules_and_named(lab):
    lab, l3b, second = lab
    twin = "ab12cd34"  # NIC uuids with one prefix: one tap name (`hst` + 8 characters) for two NICs
    lab.vms["t1"] = vm("t1", lab.l3, str(lab.l3.network.network_address + 20), "52:54:00:dd:00:05",
                       nic_uuid=twin + uuid.uuid4().hex[8:])
    lab.vms["t2"] = vm("t2", l3b, str(l3b.network.network_address + 20), "52:54:00:dd:00:06",
                       nic_uuid=twin + uuid.uuid4().hex[8:])
    try:
        apply(lab, l3b, second)
        assert lab.svc.host_stats()["bridge_rules_skipped"] == 1
        reply = await nshttp.request(lab.ns["z"].ns.name, METADATA_ADDRESS, "/latest/meta-data/instance-id")
        assert (reply.status, reply.text) == (200, lab.vms["z"].uuid)
        table = lab.host.ns.sh("nft", "list", "table", "bridge", "hsflatnet").stdout
        assert f'"hst{twin}"' not in table and f'"{lab.vms["z"].nics[0].tap}" :' in table
    finally:
        del lab.vms["t1"], lab.vms["t2"]
        apply(lab, l3b, second)
    assert lab.svc.host_stats()["bridge_rules_skipped"] == 0
