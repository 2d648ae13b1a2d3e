"""Namespace plumbing and bridge rules as the kernel shows them: create, repair, adopt, collect, remove."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from agentkit.model import L2Spec, L3Spec, NicSpec, VmSpec
from agentkit.proc import run as run_cmd
from flatnet import bridge_rules
from flatnet.l3ns import short_id
from flatnet.nft import script
from flatnet.settings import FlatnetSettings
from testbed.dhcpprobe import DhcpProbe
from testbed.flatnethost import FlatnetHost, SimHost, Switch
from testbed.netns import Netns
from testbed.vmns import VmNs

pytestmark = pytest.mark.real


def uid() -> str:
    return uuid.uuid4().hex


class Bed:
    def __init__(self, run):
        self.run = run
        self.host = SimHost(run, "a", Switch(run))
        self.l2 = L2Spec(uuid=uid(), name="phys", physical_interface="eth0")
        self.host.add_bridge(self.l2)
        net = run.subnet()
        self.l3 = L3Spec(uuid=uid(), name="flat", l2_uuid=self.l2.uuid, cidr=str(net),
                         gateway=str(net.network_address + 1), services=["DHCP"],
                         dhcp_address=str(net.network_address + 2))
        self.nics = [NicSpec(uuid=uid(), l3_uuid=self.l3.uuid, mac=f"52:54:00:1c:00:{i:02x}",
                             ip=str(net.network_address + 10 + i), default=True) for i in range(1, 3)]
        self.vms = [VmSpec(uuid=n.uuid, name=f"vm{i}", nics=[n]) for i, n in enumerate(self.nics)]
        self.svc = FlatnetHost(self.host)
        self.netns = self.svc.prefix + short_id(self.l3.uuid)
        self.inner = "hsfi" + short_id(self.l3.uuid)
        self.outer = "hsf" + short_id(self.l3.uuid)

    def apply(self, l2s=None, l3s=None, vms=None) -> dict:
        return self.svc.apply(l2s or [self.l2], l3s or [self.l3], self.vms if vms is None else vms, [])

    def ns(self) -> Netns:
        return Netns(self.run, self.netns)

    def table(self) -> str:
        """Our table with rule handles, without counters."""
        text = self.host.ns.sh("nft", "-a", "list", "table", "bridge", "hsflatnet").stdout
        return re.sub(r" packets \d+ bytes \d+", "", text)


@pytest.fixture(scope="module")
def bed(run):
    b = Bed(run)
    try:
        b.apply()
        yield b
    finally:
        b.svc.close()


def netns_names() -> list[str]:
    return [line.split()[0] for line in run_cmd(["ip", "netns", "list"]).stdout.splitlines()]


def link(ns: Netns, dev: str) -> dict:
    return json.loads(ns.ip("-j", "-d", "link", "show", dev).stdout)[0]


def test_namespace_layout(bed):
    assert bed.netns in netns_names()
    inner, outer = link(bed.ns(), bed.inner), link(bed.host.ns, bed.outer)
    assert inner["linkinfo"]["info_kind"] == "veth" and inner["operstate"] == "UP"
    assert outer["master"] == bed.l2.bridge and outer["operstate"] == "UP"
    addrs = json.loads(bed.ns().ip("-j", "-4", "addr", "show", bed.inner).stdout)[0]["addr_info"]
    assert {(a["local"], a["prefixlen"]) for a in addrs} == {(bed.l3.dhcp_address, 24), ("169.254.169.254", 32)}
    neigh = json.loads(bed.ns().ip("-j", "neigh", "show", "dev", bed.inner, "nud", "permanent").stdout)
    assert {(n["dst"], n["lladdr"]) for n in neigh} == {(n.ip, n.mac) for n in bed.nics}


def test_bridge_rules_are_exactly_the_rendering(bed):
    """The host's table equals our rendering as nft itself normalises it (loaded in a scratch namespace)."""
    mac = link(bed.ns(), bed.inner)["address"]
    expected = script("bridge", "hsflatnet", bridge_rules.body([bridge_rules.PortRules(
        uplink="eth0", port=bed.outer, port_mac=mac, dhcp_address=bed.l3.dhcp_address,
        vm_macs=frozenset(n.mac for n in bed.nics), vm_taps=frozenset(n.tap for n in bed.nics),
        bridge=bed.l2.bridge)], guest_pps=FlatnetSettings().guest_pps))
    scratch = bed.run.netns("scratch")
    scratch.sh("nft", "-f", "-", input=expected)
    listed = [bed.host.ns.sh("nft", "list", "table", "bridge", "hsflatnet").stdout,
              scratch.sh("nft", "list", "table", "bridge", "hsflatnet").stdout]
    host, want = (re.sub(r" counter packets \d+ bytes \d+", " counter", t) for t in listed)
    assert host == want
    assert 'oifname "eth0" ether saddr { 52:54:00:1c:00:01, 52:54:00:1c:00:02 } udp sport 68 udp dport 67' in host
    assert f'iifname "{bed.outer}" oifname "eth0" counter drop' in host


def test_apply_twice_changes_nothing(bed):
    before, index = bed.table(), link(bed.ns(), bed.inner)["ifindex"]
    bed.apply()
    assert bed.table() == before  # same rule handles: the table was not rewritten
    assert link(bed.ns(), bed.inner)["ifindex"] == index


def test_damage_is_repaired_by_the_next_apply(bed):
    net = bed.l3.network
    bed.ns().ip("neigh", "replace", str(net.network_address + 99), "lladdr", "52:54:00:66:66:66", "dev", bed.inner,
                "nud", "permanent")
    bed.ns().ip("addr", "del", "169.254.169.254/32", "dev", bed.inner)
    bed.apply()
    test_namespace_layout(bed)
    bed.host.ns.ip("link", "del", bed.outer)  # takes the inner end with it
    bed.apply()
    test_namespace_layout(bed)
    probe_vm = VmNs(bed.run, bed.host, bed.l2.bridge, bed.nics[0], "repaired")
    probe = DhcpProbe(probe_vm)
    try:
        (offer,) = probe.ask(bed.nics[0].mac)
        assert offer.yiaddr == bytes(map(int, bed.nics[0].ip.split(".")))
    finally:
        probe.close()


def test_orphans_with_our_prefix_are_removed_others_kept(bed):
    orphan, other = bed.svc.prefix + "deadbeef", bed.svc.prefix + "not-ours-at-all"
    for name in (orphan, other):
        run_cmd(["ip", "netns", "add", name])
    try:
        bed.apply()
        names = netns_names()
        assert orphan not in names and other in names and bed.netns in names
    finally:
        run_cmd(["ip", "netns", "del", other], rcs=(0, 1))
        run_cmd(["ip", "netns", "del", orphan], rcs=(0, 1))


def test_a_restarted_service_adopts_the_namespace(bed):
    ino = run_cmd(["stat", "-L", "-c", "%i", f"/run/netns/{bed.netns}"]).stdout
    bed.svc.close(clear=False)
    assert bed.netns in netns_names() and "hsflatnet" in bed.host.ns.sh("nft", "list", "tables").stdout
    bed.svc = FlatnetHost(bed.host, prefix=bed.svc.prefix)
    bed.apply()
    assert run_cmd(["stat", "-L", "-c", "%i", f"/run/netns/{bed.netns}"]).stdout == ino
    assert bed.svc.stats()[bed.l3.uuid]["netns"] == bed.netns


def test_vlan_l2_rules_use_the_vlan_uplink_and_two_l3s_share_a_bridge(bed):
    vlan = L2Spec(uuid=uid(), name="vlan", physical_interface="eth0", vlan=100)
    bed.host.add_bridge(vlan)
    net1, net2 = bed.run.subnet(), bed.run.subnet()
    l3s = [L3Spec(uuid=uid(), name=f"v{i}", l2_uuid=vlan.uuid, cidr=str(n), services=["DHCP"],
                  dhcp_address=str(n.network_address + 2)) for i, n in enumerate((net1, net2))]
    nics = [NicSpec(uuid=uid(), l3_uuid=l3.uuid, mac=f"52:54:00:1d:00:{i:02x}", ip=str(l3.network.network_address + 9),
                    default=True) for i, l3 in enumerate(l3s)]
    vms = [VmSpec(uuid=n.uuid, name="v", nics=[n]) for n in nics]
    bed.apply([bed.l2, vlan], [bed.l3, *l3s], bed.vms + vms)
    try:
        table = bed.table()
        assert f'oifname "{vlan.uplink}"' in table and vlan.uplink.startswith("hsv")
        (line,) = [x for x in table.splitlines() if f'oifname "{vlan.uplink}" counter drop' in x]
        assert line.strip().startswith("iifname {") and all(f'"hsf{short_id(x.uuid)}"' in line for x in l3s)
        vm = VmNs(bed.run, bed.host, vlan.bridge, nics[1], "vlanvm")
        lease = vm.udhcpc()
        assert lease.ip == nics[1].ip and lease.server_id == l3s[1].dhcp_address
    finally:
        bed.apply()
    assert vlan.uplink not in bed.table()


def test_missing_bridge_skips_only_that_l3(bed):
    l2 = L2Spec(uuid=uid(), name="late", physical_interface="eth9")
    net = bed.run.subnet()
    l3 = L3Spec(uuid=uid(), name="late", l2_uuid=l2.uuid, cidr=str(net), services=["DHCP"],
                dhcp_address=str(net.network_address + 2))
    nic = NicSpec(uuid=uid(), l3_uuid=l3.uuid, mac="52:54:00:1e:00:01", ip=str(net.network_address + 9), default=True)
    vms = [*bed.vms, VmSpec(uuid=nic.uuid, name="late", nics=[nic])]
    bed.apply([bed.l2, l2], [bed.l3, l3], vms)
    assert set(bed.svc.stats()) == {bed.l3.uuid}
    bed.host.add_bridge(l2)
    bed.apply([bed.l2, l2], [bed.l3, l3], vms)
    assert set(bed.svc.stats()) == {bed.l3.uuid, l3.uuid}
    bed.apply()
    assert set(bed.svc.stats()) == {bed.l3.uuid}
