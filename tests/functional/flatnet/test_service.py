"""Two simulated hosts on one L2, each running the real service; real DHCP clients in VM namespaces.

switch (bridge) ── host a: eth0 ─ L2 bridge ─ VMs (dhclient, udhcpc, dhcpcd), flat namespace
               ├── host b: eth0 ─ L2 bridge ─ VM (udhcpc), flat namespace (same DHCP address)
               └── gw: the L3 gateway (and, for zstack#205, a foreign dnsmasq)
mgmt switch ── hosts' mgmt0 ── upstream DNS server (dnslib)
"""

from __future__ import annotations

import ipaddress
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import pytest

from agentkit.model import DnsRecord, L2Spec, L3Spec, NicSpec, Service, VmSpec
from agentkit.proc import run as run_cmd
from flatnet.hostname import hostname
from testbed.dhcpprobe import DhcpProbe
from testbed.flatnethost import FlatnetHost, SimHost, Switch
from testbed.netns import Netns, Run
from testbed.vmns import Lease, VmNs

pytestmark = pytest.mark.real


def uid() -> str:
    return uuid.uuid4().hex


@dataclass
class Lan:
    run: Run
    a: SimHost
    b: SimHost
    gw: Netns
    l2: L2Spec
    l3: L3Spec
    svc: dict[str, FlatnetHost]
    vms: dict[str, tuple[str, VmSpec]] = field(default_factory=dict)  # role -> (host role, spec)
    ns: dict[str, VmNs] = field(default_factory=dict)

    def address(self, i: int) -> str:
        return str(self.l3.network.network_address + i)

    def add_vm(self, role: str, host: str, i: int, mac: str, plug: bool = True) -> VmSpec:
        nic = NicSpec(uuid=uid(), l3_uuid=self.l3.uuid, mac=mac, ip=self.address(i), default=True)
        vm = VmSpec(uuid=uid(), name=f"{role.title()} VM", nics=[nic])
        if plug:
            self.ns[role] = VmNs(self.run, getattr(self, host), self.l2.bridge, nic, role)
        self.vms[role] = (host, vm)
        return vm

    def apply(self, host: str, l3: L3Spec | None = None) -> dict:
        vms = [vm for h, vm in self.vms.values() if h == host]
        records = [DnsRecord(l3_uuid=self.l3.uuid, name=vm.name, ip=vm.nics[0].ip) for _, vm in self.vms.values()]
        return self.svc[host].apply([self.l2], [l3 or self.l3], vms, records)

    def expected(self, role: str) -> Lease:
        vm = self.vms[role][1]
        dhcp, gw = self.l3.dhcp_address, self.l3.gateway
        return Lease(ip=vm.nics[0].ip, mask="255.255.255.0", router=[gw], dns=[dhcp], domain="cloud.test",
                     hostname=hostname(vm.name), mtu=1450, routes=[("169.254.169.254/32", dhcp), ("0.0.0.0/0", gw)],
                     server_id=dhcp, lease_time=86400, broadcast=str(self.l3.network.broadcast_address))


@pytest.fixture(scope="module")
def lan(run: Run):
    sw, mgmt = Switch(run, "sw"), Switch(run, "mgmt")
    hosts = {role: SimHost(run, role, sw) for role in ("a", "b")}
    l2 = L2Spec(uuid=uid(), name="phys", physical_interface="eth0")
    net, mnet = run.subnet(), run.subnet()
    for i, host in enumerate(hosts.values()):
        host.add_bridge(l2)
        mgmt.plug(host.ns, "mgmt0")
        host.ns.ip("addr", "add", f"{mnet.network_address + 10 + i}/24", "dev", "mgmt0")
    upstream = run.netns("dns")
    mgmt.plug(upstream, "eth0")
    upstream.ip("addr", "add", f"{mnet.network_address + 53}/24", "dev", "eth0")
    upstream.popen([sys.executable, "-m", "testbed.dnsupstream"], log_name="dns-upstream")
    gw = run.netns("gw")
    sw.plug(gw, "eth0")
    gw.ip("addr", "add", f"{net.network_address + 1}/24", "dev", "eth0")
    l3 = L3Spec(uuid=uid(), name="flat", l2_uuid=l2.uuid, cidr=str(net), gateway=str(net.network_address + 1),
                dns_servers=[str(mnet.network_address + 53)], domain="cloud.test", mtu=1450,
                services=["DHCP", "DNS", "Userdata"], dhcp_address=str(net.network_address + 2))
    svc = {role: FlatnetHost(host) for role, host in hosts.items()}
    lan = Lan(run, hosts["a"], hosts["b"], gw, l2, l3, svc)
    try:
        for i, client in enumerate(("dhclient", "udhcpc", "dhcpcd")):
            lan.add_vm(client, "a", 10 + i, f"52:54:00:0a:00:{i + 1:02x}")
        lan.add_vm("far", "b", 20, "52:54:00:0b:00:01")
        lan.apply("a")
        lan.apply("b")
        yield lan
    finally:
        for s in svc.values():
            s.close()


def rule_packets(host: SimHost, fragment: str) -> int:
    text = host.ns.sh("nft", "list", "table", "bridge", "hsflatnet").stdout
    line = next(line for line in text.splitlines() if fragment in line)
    return int(re.search(r"packets (\d+)", line).group(1))


def netns_names() -> list[str]:
    return [line.split()[0] for line in run_cmd(["ip", "netns", "list"]).stdout.splitlines()]


def dhcp_rx(svc: FlatnetHost) -> int:
    return sum(s["dhcp"].get("rx", 0) for s in svc.stats().values())


@pytest.mark.parametrize("client", ["dhclient", "udhcpc", "dhcpcd"])
def test_real_clients_get_exactly_their_reservation(lan, client):
    lease = getattr(lan.ns[client], client)()
    assert lease == lan.expected(client)


def test_dhcpcd_installs_the_metadata_route(lan):
    routes = lan.ns["dhcpcd"].ns.ip("route").stdout
    assert f"169.254.169.254 via {lan.l3.dhcp_address}" in routes
    assert lan.ns["dhcpcd"].ping("169.254.169.254")


def test_vm_on_host_b_is_answered_by_b_only(lan):
    a_before, b_before = dhcp_rx(lan.svc["a"]), dhcp_rx(lan.svc["b"])
    leaked_before = rule_packets(lan.b, "udp dport 67")
    lease = lan.ns["far"].udhcpc()
    assert lease == lan.expected("far")
    assert dhcp_rx(lan.svc["a"]) == a_before
    assert dhcp_rx(lan.svc["b"]) > b_before
    assert rule_packets(lan.b, "udp dport 67") > leaked_before  # its broadcasts stopped at b's uplink


def test_arp_for_the_dhcp_address_stays_on_the_host(lan):
    far = lan.ns["far"]
    far.configure(far.udhcpc())
    assert far.ping(lan.l3.dhcp_address)
    a_ns = lan.svc["a"].stats()[lan.l3.uuid]["netns"]
    assert Netns(lan.run, a_ns).ip("neigh", "show", lan.vms["far"][1].nics[0].ip).stdout.strip() == ""


def test_unknown_mac_gets_no_answer(lan):
    lan.add_vm("stranger", "a", 30, "52:54:00:0a:00:99")
    del lan.vms["stranger"]  # plugged in, but not reserved
    probe = DhcpProbe(lan.ns["stranger"])
    try:
        unknown = lan.svc["a"].stats()[lan.l3.uuid]["dhcp"].get("unknown", 0)
        assert probe.ask("52:54:00:0a:00:99", timeout=1.0) == []
        assert lan.svc["a"].stats()[lan.l3.uuid]["dhcp"]["unknown"] > unknown
    finally:
        probe.close()


def test_reservation_change_is_served_within_50ms_and_removal_stops_it(lan):
    mac = "52:54:00:0a:00:99"
    probe = DhcpProbe(lan.ns["stranger"])
    try:
        got: dict[str, float | None] = {}
        asker = threading.Thread(target=lambda: got.update(t=probe.first_offer(mac, interval=0.002, timeout=5)))
        asker.start()
        time.sleep(0.2)  # DISCOVERs are flowing, unanswered
        lan.add_vm("stranger", "a", 30, mac, plug=False)
        timing = lan.apply("a")
        asker.join()
        assert got["t"] is not None
        latency = got["t"] - timing["t0"]
        print(f"\nreservation served {latency * 1000:.1f} ms after apply() began "
              f"(apply took {(timing['t1'] - timing['t0']) * 1000:.1f} ms)")
        assert latency < 1.0  # the 50 ms target is measured on a quiet machine, not asserted under load
        del lan.vms["stranger"]
        lan.apply("a")
        assert probe.ask(mac, timeout=0.5) == []
        a_ns = lan.svc["a"].stats()[lan.l3.uuid]["netns"]
        assert lan.address(30) not in Netns(lan.run, a_ns).ip("neigh").stdout
    finally:
        probe.close()


def test_metadata_address_reached_by_guests_ignoring_route_121(lan):
    vm = lan.ns["udhcpc"]
    vm.configure(vm.udhcpc(), routes=False)
    assert f"default via {lan.l3.gateway}" in vm.ns.ip("route").stdout
    assert "169.254.169.254" not in vm.ns.ip("route").stdout
    assert vm.ping("169.254.169.254")  # the gateway has no such address: only the flat namespace answers


def test_dns_names_of_every_host_forwarding_and_tcp(lan):
    vm = lan.ns["dhclient"]
    vm.configure(vm.dhclient())
    dns, far = lan.l3.dhcp_address, lan.vms["far"][1]
    assert [str(r.rdata) for r in vm.dns(dns, "far-vm.cloud.test").rr] == [far.nics[0].ip]
    ptr = vm.dns(dns, f"{far.nics[0].ip.split('.')[3]}.{'.'.join(reversed(lan.address(0).split('.')[:3]))}"
                 ".in-addr.arpa", "PTR")
    assert [str(r.rdata) for r in ptr.rr] == ["far-vm.cloud.test."]
    assert [str(r.rdata) for r in vm.dns(dns, "www.example.net").rr] == ["203.0.113.7"]
    assert [str(r.rdata) for r in vm.dns(dns, "www.example.net", tcp=True).rr] == ["203.0.113.7"]
    assert [str(r.rdata) for r in vm.dns(dns, "dhclient-vm.cloud.test", tcp=True).rr] == [lan.address(10)]
    assert vm.dns(dns, "nothing.invalid").header.rcode == 3  # NXDOMAIN from upstream, passed through


def test_other_dhcp_servers_on_the_physical_network_keep_working(lan):
    """zstack#205: only the NICs we serve are fenced; a foreign server still serves everyone else."""
    net = lan.l3.network
    log = lan.run.path("foreign-dnsmasq.log")
    proc = lan.gw.popen(["dnsmasq", "--conf-file=/dev/null", "--keep-in-foreground", "--port=0",
                         "--interface=eth0", "--bind-interfaces", "--no-ping", "--leasefile-ro", "--log-dhcp",
                         f"--log-facility={log}", f"--dhcp-range={net.network_address + 100},"
                         f"{net.network_address + 150},1h"], log_name="foreign-dnsmasq")
    try:
        time.sleep(0.3)
        lan.add_vm("nested", "a", 40, "52:54:00:0e:00:01")
        del lan.vms["nested"]  # e.g. a VM inside a VM: not ours to serve
        nested = lan.ns["nested"].udhcpc()
        assert nested is not None and nested.server_id == lan.l3.gateway
        assert net.network_address + 100 <= ipaddress.IPv4Address(nested.ip) <= net.network_address + 150
        assert lan.ns["udhcpc"].udhcpc() == lan.expected("udhcpc")
        assert "52:54:00:0a:00:02" not in log.read_text()
    finally:
        lan.run.stop(proc)


def test_removing_the_last_vm_or_the_service_removes_namespace_and_rules(lan):
    b_ns = lan.svc["b"].stats()[lan.l3.uuid]["netns"]
    del lan.vms["far"]
    lan.apply("b")
    assert b_ns not in netns_names()
    assert "hsflatnet" not in lan.b.ns.sh("nft", "list", "tables").stdout
    assert "hsf" not in lan.b.ns.ip("-br", "link").stdout
    a_ns = lan.svc["a"].stats()[lan.l3.uuid]["netns"]
    lan.apply("a", lan.l3.model_copy(update={"services": [Service.DNS]}))
    assert a_ns not in netns_names()
    assert "hsflatnet" not in lan.a.ns.sh("nft", "list", "tables").stdout
