"""Two L3s with the same CIDR and DHCP address on one L2: nothing ever resolves to the other L3's VM
(issue 13, finding 8), not even to a stopped VM whose address a guest on the other L3 holds.

Both namespaces sit on the same bridge and answer for the same address. Before, a guest of L3 A that
sent its handshake to the Ethernet address of L3 B's namespace was served as the VM of L3 B with its
own address, and read that VM's user-data from the flooded replies (the VM is stopped: nobody else
takes them). Now a namespace talks only with the taps of its own L3's NICs.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from agentkit.addr import METADATA_ADDRESS
from agentkit.model import L3Spec, NicSpec, Service, VmSpec
from agentkit.proc import run as run_cmd
from flatnet.l3ns import INNER_DEV_PREFIX, short_id
from testbed import attacks, nshttp
from testbed.guestlab import GuestLab

pytestmark = pytest.mark.real
SECRET = "#cloud-config\n# B's secret, a stopped VM of the other L3\n"


@pytest.fixture(scope="module")
def lab(run):
    lab = GuestLab.create(run, "o")
    a = lab.add_vm("attacker", 10, userdata="#cloud-config\n# A's own\n")
    other = lab.l3.model_copy(update={"uuid": uuid.uuid4().hex, "name": "overlapping",
                                      "services": [Service.DHCP, Service.USERDATA]})
    ip_of_a = a.nics[0].ip
    stopped = VmSpec(uuid=uuid.uuid4().hex, name="stopped b", userdata=SECRET, nics=[
        NicSpec(uuid=uuid.uuid4().hex, l3_uuid=other.uuid, mac="52:54:00:0b:00:10", ip=ip_of_a, default=True)])
    running = VmSpec(uuid=uuid.uuid4().hex, name="running b", nics=[
        NicSpec(uuid=uuid.uuid4().hex, l3_uuid=other.uuid, mac="52:54:00:0b:00:11",
                ip=str(other.network.network_address + 11), default=True)])
    lab.start()
    lab.apply([lab.l3, other], [a, stopped, running])
    lab.ns["running"] = lab.plug("running", running.nics[0], other)
    lab.vms.update({"stopped": stopped, "running": running})
    yield lab, other
    lab.close()


def namespace_mac(lab: GuestLab, l3: L3Spec) -> str:
    netns = lab.svc.stats()[l3.uuid]["netns"]
    out = run_cmd(["ip", "-n", netns, "-j", "link", "show", INNER_DEV_PREFIX + short_id(l3.uuid)]).stdout
    return json.loads(out)[0]["address"]


async def steal(lab: GuestLab, host: str, dst_mac: str, path: str) -> dict:
    vm = lab.ns["attacker"]
    argv = attacks.argv("steal", ifname=vm.ifname, mac=vm.nic.mac, ip=vm.nic.ip, host=host, port=80,
                        **{"dst-mac": dst_mac}, path=path)
    out = await asyncio.get_running_loop().run_in_executor(None, lambda: vm.ns.sh(*argv, timeout=30).stdout)
    return json.loads(out.strip().splitlines()[-1])


async def test_each_l3_serves_its_own_vms(lab):
    lab, _ = lab
    a = await nshttp.request(lab.ns["attacker"].ns.name, METADATA_ADDRESS, "/latest/user-data")
    b = await nshttp.request(lab.ns["running"].ns.name, METADATA_ADDRESS, "/latest/meta-data/instance-id")
    assert (a.status, a.text) == (200, "#cloud-config\n# A's own\n")
    assert (b.status, b.text) == (200, lab.vms["running"].uuid)


@pytest.mark.parametrize("host", ["dhcp", "metadata"])
async def test_a_guest_never_reaches_the_other_l3s_namespace(lab, host):
    """By the shared DHCP address (the CloudStack API) or the metadata address, to the other namespace's MAC."""
    lab, other = lab
    address = lab.l3.dhcp_address if host == "dhcp" else METADATA_ADDRESS
    own = await steal(lab, address, namespace_mac(lab, lab.l3), "/latest/user-data")
    assert own.get("synack", 0) >= 1, f"the harness is blind: its own L3's namespace never answered: {own}"
    got = await steal(lab, address, namespace_mac(lab, other), "/latest/user-data")
    print(f"\nhandcrafted request to the other L3's namespace: {got}")
    assert "B's secret" not in got.get("data", "")
    if host == "dhcp":
        assert got.get("synack", 0) == 0  # the other namespace never even saw the SYN
