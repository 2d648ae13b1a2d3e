"""The EIP dataplane against real namespaces, bridges, nftables and conntrack (two simulated hosts).

Topology: testbed/eiplab.py. Each test starts from hosts without EIP and leaves them so.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from pyroute2.conntrack import AsyncConntrack
from scapy.layers.inet import ICMP, IP

from agentkit.model import VmSpec
from flatnet import nft
from flatnet.eip.dataplane import EipDataplane, EipStatus
from flatnet.eip.settings import EipSettings
from testbed import eiplab
from testbed.eiplab import INTERNET_IP, ROUTER_PUBLIC_IP, EipLab
from testbed.netns import Netns

pytestmark = pytest.mark.real
VM_PORT, INTERNET_PORT = 8080, 9090


@pytest.fixture(scope="module")
def lab(run) -> Iterator[EipLab]:
    lab = eiplab.build(run)
    server = eiplab.EchoServer(lab.internet, INTERNET_PORT)
    try:
        yield lab
    finally:
        server.close()
        lab.close()


class Hosts:
    """One dataplane per simulated host, as each host's agent runs it."""

    def __init__(self, lab: EipLab):
        self.lab = lab
        self.dp = {h: self.new(h) for h in lab.hosts}
        self.servers: list[eiplab.EchoServer] = []

    def serve(self, vm: str) -> None:
        """An echo server on the VM (plugged again after a move: serve again)."""
        self.servers.append(eiplab.EchoServer(self.lab.vm_ns[vm], VM_PORT))

    def new(self, host: str, garp_count: int = 3) -> EipDataplane:
        h = self.lab.hosts[host]
        return EipDataplane(EipSettings(netns_prefix=h.eip_prefix, garp_interval=0.2, garp_count=garp_count),
                            host_netns=h.ns.name)

    async def apply(self, host: str, *vms: VmSpec) -> EipStatus:
        return await self.dp[host].apply(self.lab.l2s, self.lab.l3s, {v.uuid: v for v in vms})

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for dp in self.dp.values():
            await dp.apply({}, {}, {})
            await dp.close()
        assert self.lab.eip_namespaces() == []


@pytest.fixture
async def hosts(lab) -> AsyncIterator[Hosts]:
    h = Hosts(lab)
    try:
        yield h
    finally:
        await h.close()


def eip_ns(lab: EipLab, host: str) -> Netns:
    (name,) = [n for n in lab.eip_namespaces() if n.startswith(lab.hosts[host].eip_prefix)]
    return Netns(lab.run, name)


def public_mac(lab: EipLab, host: str) -> str:
    """The MAC of the public device of `host`'s EIP namespace."""
    out = eip_ns(lab, host).ip("-o", "link", "show", "pub").stdout
    return re.search(r"link/ether (\S+)", out).group(1)


def internet_neighbour(lab: EipLab, ip: str) -> str | None:
    out = lab.internet.ip("neigh", "show", ip).stdout
    found = re.search(r"lladdr (\S+)", out)
    return found.group(1) if found else None


def arp_answers(lab: EipLab, ip: str) -> set[str]:
    """MACs that answer ARP for `ip` on the public L2 (seen from the internet namespace)."""
    out = lab.internet.sh("busybox", "arping", "-c", "2", "-w", "2", "-I", "eth0", ip, rcs=(0, 1)).stdout
    return set(re.findall(r"\[([0-9a-f:]{17})\]", out.lower()))


async def conntrack_addresses(netns: str) -> set[str]:
    ct = AsyncConntrack(netns=netns, flags=0)
    try:
        entries = [e async for e in await ct.dump_entries()]
    finally:
        ct.close()
    return {a for e in entries for a in (e.tuple_orig.saddr, e.tuple_orig.daddr, e.tuple_reply.saddr,
                                         e.tuple_reply.daddr)}


def echo(sock) -> bool:
    """Whether one byte still makes the round trip (the socket has a timeout)."""
    try:
        sock.sendall(b"x")
        return sock.recv(1) == b"x"
    except OSError:
        return False
    finally:
        sock.close()


async def test_eip_reaches_vm_and_detach_restores_host(lab, hosts):
    a1, a2 = lab.vm("a", "a1", 10, vip="203.0.113.10"), lab.vm("a", "a2", 11)
    a3 = lab.vm("a", "a3", 12, vip="203.0.113.12")
    b1, b2 = lab.vm("b", "b1", 20), lab.vm("b", "b2", 21, vip="203.0.113.21")
    hosts.serve("a1")
    before = {h: eiplab.dumps(lab.hosts[h].ns) for h in ("a", "b")}
    status = await hosts.apply("a", a1, a2, a3)
    assert status.applied == {a1.nics[0].eip.uuid: "203.0.113.10", a3.nics[0].eip.uuid: "203.0.113.12"}
    assert not status.errors
    await hosts.apply("b", b1, b2)

    assert eiplab.ping(lab.internet, "203.0.113.10")
    assert eiplab.seen_by_server(lab.internet, "203.0.113.10", VM_PORT) == INTERNET_IP  # DNAT only
    assert eiplab.seen_by_server(lab.vm_ns["a1"], INTERNET_IP, INTERNET_PORT) == "203.0.113.10"  # SNAT
    assert eiplab.seen_by_server(lab.vm_ns["a2"], INTERNET_IP, INTERNET_PORT) == ROUTER_PUBLIC_IP  # normal path
    assert eiplab.seen_by_server(lab.vm_ns["b1"], INTERNET_IP, INTERNET_PORT) == ROUTER_PUBLIC_IP
    assert eiplab.seen_by_server(lab.vm_ns["b2"], INTERNET_IP, INTERNET_PORT) == "203.0.113.21"
    assert arp_answers(lab, "203.0.113.10") == {public_mac(lab, "a")}  # host B stays silent
    assert arp_answers(lab, "203.0.113.21") == {public_mac(lab, "b")}
    assert eiplab.seen_by_server(lab.vm_ns["a3"], "203.0.113.10", VM_PORT) == "203.0.113.12"  # hairpin
    assert eiplab.seen_by_server(lab.vm_ns["b2"], "203.0.113.10", VM_PORT) == "203.0.113.21"  # host to host

    conn, _ = eiplab.connect(lab.internet, "203.0.113.10", VM_PORT, timeout=1)
    assert "203.0.113.10" in await conntrack_addresses(eip_ns(lab, "a").name)
    a1.nics[0].eip = None
    await hosts.apply("a", a1, a2, a3)  # a3 keeps its EIP, so the namespace stays
    assert "203.0.113.10" not in await conntrack_addresses(eip_ns(lab, "a").name)
    assert echo(conn) is False  # the established connection ends with the EIP
    assert not eiplab.ping(lab.internet, "203.0.113.10")
    assert eiplab.seen_by_server(lab.internet, "203.0.113.10", VM_PORT, timeout=1) is None
    assert arp_answers(lab, "203.0.113.10") == set()
    assert eiplab.seen_by_server(lab.vm_ns["a1"], INTERNET_IP, INTERNET_PORT) == ROUTER_PUBLIC_IP
    assert eiplab.seen_by_server(lab.vm_ns["a3"], INTERNET_IP, INTERNET_PORT) == "203.0.113.12"
    a3.nics[0].eip = None
    await hosts.apply("a", a1, a2, a3)
    assert eiplab.dumps(lab.hosts["a"].ns) == before["a"]
    assert eiplab.seen_by_server(lab.vm_ns["b2"], INTERNET_IP, INTERNET_PORT) == "203.0.113.21"  # B untouched
    await hosts.apply("b", b1)
    assert eiplab.dumps(lab.hosts["b"].ns) == before["b"]


async def test_a_vm_packet_nat_cannot_translate_is_dropped_not_sent_from_its_private_address(lab, hosts):
    """NAT translates what conntrack tracks. An echo reply to a request the namespace never saw (a VM that
    moved live answering a ping its old host let in) is dropped there, not sent onto the public network
    from the VM's private address; the VM's echo request after it, tracked, leaves as the VIP."""
    a1 = lab.vm("a", "a1", 10, vip="203.0.113.10")
    await hosts.apply("a", a1)
    listener, sender = eiplab.icmp_socket(lab.internet), eiplab.icmp_socket(lab.vm_ns["a1"])
    listener.settimeout(3)
    seen = set()
    try:
        for kind in ("echo-reply", "echo-request"):  # one path: a reply let through arrives first
            sender.sendto(bytes(ICMP(type=kind, id=0x4853, seq=1) / b"moved"), (INTERNET_IP, 0))
        while ("203.0.113.10", 8) not in seen:
            got = IP(listener.recv(2048))
            if got[ICMP].id == 0x4853:
                seen.add((got.src, got[ICMP].type))
    finally:
        listener.close()
        sender.close()
    assert seen == {("203.0.113.10", 8)}



async def test_an_eip_namespace_sends_no_icmp_redirects(lab, hosts):
    """A packet that enters `pub` and would leave by `pub` again (anyone on the public network can send one,
    from a forged source too) gets no ICMP redirect from the namespace: it would make the VIP a reflector
    towards whoever the source names. The forward chain drops the packet; the kernel's redirect comes
    before that chain, so redirects are switched off in the namespace."""
    a1 = lab.vm("a", "a1", 10, vip="203.0.113.10")
    await hosts.apply("a", a1)
    ns = eip_ns(lab, "a")
    lab.internet.ip("route", "add", "203.0.113.200/32", "via", "203.0.113.10")
    try:
        lab.internet.sh("ping", "-c", "3", "-i", "0.2", "-W", "1", "203.0.113.200", rcs=(0, 1))
        route = lab.internet.ip("route", "get", "203.0.113.200").stdout
    finally:
        lab.internet.ip("route", "del", "203.0.113.200/32")
    snmp = ns.sh("cat", "/proc/net/snmp").stdout.splitlines()
    icmp = dict(zip(*(line.split()[1:] for line in snmp if line.startswith("Icmp:")), strict=True))
    assert int(icmp["OutRedirects"]) == 0, icmp
    assert "via 203.0.113.10" in route, route  # the sender's route was not redirected either
    assert eiplab.ping(lab.internet, "203.0.113.10")  # the VIP itself still answers

class Pinger:
    """Echoes one byte every 20 ms over a TCP connection; records the longest silence."""

    def __init__(self, sock):
        self.sock, self.gap, self.errors, self.count = sock, 0.0, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sock.sendall(b"x")
                if self.sock.recv(1) != b"x":
                    raise ConnectionError("bad echo")
            except OSError as e:
                self.errors.append(repr(e))
                return
            now = time.monotonic()
            self.gap, last, self.count = max(self.gap, now - last), now, self.count + 1
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def eip_state(lab: EipLab, host: str) -> dict[str, str]:
    """Dumps of the host and its EIP namespace; rule handles (`nft -a`) change if a table is rebuilt."""
    ns, host_ns = eip_ns(lab, host), lab.hosts[host].ns
    return {**eiplab.dumps(host_ns), **{f"eip {k}": v for k, v in eiplab.dumps(ns).items()},
            "nft -a": host_ns.sh("nft", "-a", "list", "ruleset").stdout,
            "eip nft -a": ns.sh("nft", "-a", "list", "ruleset").stdout,
            "eip addr": ns.ip("addr").stdout, "eip route": ns.ip("route").stdout,
            "eip neigh": ns.ip("neigh", "show", "nud", "permanent").stdout}


async def test_restart_with_50_eips_keeps_rules_and_connections(lab, hosts):
    vms = [lab.vm("a", "a1", 10, vip="203.0.113.10")]
    vms += [lab.vm("a", f"x{n}", 100 + n, vip=f"203.0.113.{100 + n}", plug=False) for n in range(49)]
    hosts.serve("a1")
    status = await hosts.apply("a", *vms)
    assert len(status.applied) == 50
    sock, seen = eiplab.connect(lab.internet, "203.0.113.10", VM_PORT)
    assert seen == INTERNET_IP
    pinger = Pinger(sock)
    try:
        time.sleep(0.3)
        state = eip_state(lab, "a")
        assert state["eip nft list ruleset"].count(" : 203.0.113.") == 50
        await hosts.dp["a"].close()  # the agent stops ...
        hosts.dp["a"] = hosts.new("a")  # ... and a new process starts with the same desired state
        t0 = time.monotonic()
        again = await hosts.apply("a", *vms)
        took = time.monotonic() - t0
        time.sleep(1.5)
        assert again.applied == status.applied
        assert eip_state(lab, "a") == state
    finally:
        pinger.stop()
    assert pinger.errors == [] and pinger.count > 50
    assert pinger.gap < 1.0, f"longest silence {pinger.gap:.2f}s (re-apply took {took:.2f}s)"


async def test_vip_follows_vm_to_other_host(lab, hosts):
    a1 = lab.vm("a", "a1", 10, vip="203.0.113.10")
    hosts.serve("a1")
    await hosts.apply("a", a1)
    assert eiplab.ping(lab.internet, "203.0.113.10")
    assert internet_neighbour(lab, "203.0.113.10") == public_mac(lab, "a")

    await hosts.apply("a")  # the VM migrates: gone from A's desired state ...
    lab.plug("b", "a1", a1.nics[0])
    hosts.serve("a1")
    await hosts.apply("b", a1)  # ... and present in B's
    new_mac = public_mac(lab, "b")
    assert internet_neighbour(lab, "203.0.113.10") == new_mac  # updated by the gratuitous ARP, not by expiry
    assert eiplab.seen_by_server(lab.internet, "203.0.113.10", VM_PORT) == INTERNET_IP
    assert eiplab.seen_by_server(lab.vm_ns["a1"], INTERNET_IP, INTERNET_PORT) == "203.0.113.10"
    assert [n for n in lab.eip_namespaces() if n.startswith(lab.hosts["a"].eip_prefix)] == []


async def test_an_agent_killed_before_announcing_a_vip_announces_it_after_its_restart(lab, hosts):
    a1 = lab.vm("a", "a1", 10, vip="203.0.113.10")
    await hosts.apply("a", a1)
    assert eiplab.ping(lab.internet, "203.0.113.10")
    old_mac = public_mac(lab, "a")
    await hosts.apply("a")  # the VM moves to B, whose agent adds the VIP and is killed before announcing it
    lab.plug("b", "a1", a1.nics[0])
    await hosts.dp["b"].close()
    hosts.dp["b"] = hosts.new("b", garp_count=0)
    await hosts.apply("b", a1)
    assert internet_neighbour(lab, "203.0.113.10") == old_mac  # nobody told the neighbours
    await hosts.dp["b"].close()
    hosts.dp["b"] = hosts.new("b")  # the restarted agent: the VIP is already there
    hosts.serve("a1")
    t0 = time.monotonic()
    await hosts.apply("b", a1)
    assert internet_neighbour(lab, "203.0.113.10") == public_mac(lab, "b")
    assert eiplab.seen_by_server(lab.internet, "203.0.113.10", VM_PORT) == INTERNET_IP
    assert time.monotonic() - t0 < 2


async def test_without_router_namespace_answers_gateway_arp_for_eip_vms_only(lab, hosts):
    a1, a2 = lab.vm("a", "a1", 10, vip="203.0.113.10"), lab.vm("a", "a2", 11)
    await hosts.apply("a", a1, a2)
    lab.router.ip("link", "set", "priv", "down")
    try:
        for vm in ("a1", "a2"):
            lab.vm_ns[vm].ip("neigh", "flush", "all")
        assert eiplab.seen_by_server(lab.vm_ns["a1"], INTERNET_IP, INTERNET_PORT) == "203.0.113.10"
        assert not eiplab.arping(lab.vm_ns["a2"], lab.private_l3.gateway)
    finally:
        lab.router.ip("link", "set", "priv", "up")
        for vm in ("a1", "a2"):
            lab.vm_ns[vm].ip("neigh", "flush", "all")


async def test_a_live_move_is_staged_on_the_new_host_and_switched_by_the_vip_alone(lab, hosts, monkeypatch):
    """Make-before-break: B stages the moving VM's EIP (its pair, maps and steering) and stays silent for it, A
    still answering (a VM of B reaches the VIP there); A's silence ends its answers at once; B's switch adds
    the VIP and announces it, and writes no table (it runs no nft at all): the rule handles stay."""
    a1, b2 = lab.vm("a", "a1", 10, vip="203.0.113.10"), lab.vm("b", "b2", 21, vip="203.0.113.21")
    hosts.serve("a1")
    await hosts.apply("a", a1)
    staged = await hosts.apply("b", b2, a1.model_copy(update={"incoming": "move0001"}))
    assert staged.staged == {a1.nics[0].eip.uuid: "203.0.113.10"}
    assert staged.applied == {b2.nics[0].eip.uuid: "203.0.113.21"}
    assert arp_answers(lab, "203.0.113.10") == {public_mac(lab, "a")}  # B stays silent for it
    assert eiplab.seen_by_server(lab.vm_ns["b2"], "203.0.113.10", VM_PORT) == "203.0.113.21"  # answered by A
    before = eip_state(lab, "b")

    await hosts.dp["a"].silence(lab.l2s, lab.l3s, {})  # the VM stopped running on A
    assert arp_answers(lab, "203.0.113.10") == set()
    assert eiplab.seen_by_server(lab.internet, "203.0.113.10", VM_PORT, timeout=1) is None
    assert "203.0.113.10" in eip_ns(lab, "a").sh("nft", "list", "ruleset").stdout  # the rest waits for A's next pass

    lab.plug("b", "a1", a1.nics[0])
    hosts.serve("a1")
    processes, real = [], nft.arun

    def counted(argv, **kwargs):
        processes.append(argv)
        return real(argv, **kwargs)
    monkeypatch.setattr(nft, "arun", counted)
    t0 = time.monotonic()
    switched = await hosts.dp["b"].apply(lab.l2s, lab.l3s, {v.uuid: v for v in (a1, b2)}, verify=False)
    took = time.monotonic() - t0
    assert processes == [] and switched.staged == {}
    assert internet_neighbour(lab, "203.0.113.10") == public_mac(lab, "b")  # announced
    after = eip_state(lab, "b")
    assert after["nft -a"] == before["nft -a"] and after["eip nft -a"] == before["eip nft -a"]
    assert eiplab.seen_by_server(lab.internet, "203.0.113.10", VM_PORT) == INTERNET_IP
    assert eiplab.seen_by_server(lab.vm_ns["a1"], INTERNET_IP, INTERNET_PORT) == "203.0.113.10"
    assert eiplab.seen_by_server(lab.vm_ns["b2"], "203.0.113.10", VM_PORT) == "203.0.113.21"  # hairpin, on B now
    print(f"switch on B took {took * 1000:.1f} ms")
    await hosts.apply("a")
    assert [n for n in lab.eip_namespaces() if n.startswith(lab.hosts["a"].eip_prefix)] == []
