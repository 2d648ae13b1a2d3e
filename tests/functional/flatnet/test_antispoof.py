"""Anti-spoofing table: its end state in nftables, and the frames it lets through a real bridge (the text it
renders: tests/unit/flatnet/test_antispoof.py)."""

from __future__ import annotations

import re
import socket

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, LLC, SNAP, Dot1AD, Dot1Q, Dot3, Ether

from agentkit.netns import netns_socket
from flatnet.antispoof import Antispoof
from testbed.metadatalab import MetadataLab
from testbed.netns import Run

MAC, IP_ = "52:54:00:12:34:56", "198.18.7.10"


@pytest.fixture
def run():
    with Run() as r:
        yield r


@pytest.mark.real
async def test_apply_is_idempotent_and_leaves_other_tables_alone(run):
    ns = run.netns("nft")
    ns.sh("nft", "-f", "-", input="table bridge theirs {\n chain c {\n type filter hook input priority 0;\n }\n}\n")
    antispoof = Antispoof(ns.name)
    await antispoof.apply({"hst1": (MAC, IP_)})
    first = ns.sh("nft", "list", "ruleset").stdout
    await antispoof.apply({"hst1": (MAC, IP_)})
    assert ns.sh("nft", "list", "ruleset").stdout == first
    assert "table bridge theirs" in first
    assert 'iifname vmap { "hst1" : jump tap_hst1 }' in first
    await antispoof.apply({})
    after = ns.sh("nft", "list", "ruleset").stdout
    assert "table bridge theirs" in after and "tap_hst1" not in after and "table bridge hs_antispoof" in after


@pytest.mark.real
async def test_a_restarted_agent_with_a_current_table_writes_nothing(run):
    ns = run.netns("nft")
    await Antispoof(ns.name).apply({"hst1": (MAC, IP_)})
    before = ns.sh("nft", "-a", "list", "ruleset").stdout
    assert 'comment "hoststack ' in before
    await Antispoof(ns.name).apply({"hst1": (MAC, IP_)})  # a new process, the same taps
    assert ns.sh("nft", "-a", "list", "ruleset").stdout == before  # same rule handles: not rewritten
    await Antispoof(ns.name).apply({"hst1": (MAC, IP_), "hst2": ("52:54:00:00:00:02", "198.18.7.11")})
    assert "tap_hst2" in ns.sh("nft", "list", "ruleset").stdout


@pytest.mark.real
async def test_only_the_nics_own_frames_cross_the_bridge(run):
    """Frames from a VM, counted where they arrive (the service namespace's ingress). A frame cut short is
    padded with zeros on an uplink: an ARP reply cut inside its sender IP claims `a.b.c.0` there."""
    lab = MetadataLab.create(run)
    vm = lab.add_vm("vm")
    nic, svc_ip, other_ip = vm.nic, str(lab.l3.dhcp_address), str(lab.l3.network[99])
    lab.host.sh("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")  # br_netfilter drops a cut IPv4 header
    antispoof = Antispoof(lab.host.name)
    await antispoof.apply({nic.tap: (nic.mac, nic.ip)})
    lab.svc.sh("nft", "-f", "-", input=(
        "table netdev count {\n chain in {\n type filter hook ingress device md0 priority 0;\n"
        + "".join(f" udp dport {port} counter\n" for port in (67, 68, 9001, 9002, 9003))
        + f" arp saddr ip {svc_ip} counter\n arp saddr ip {nic.ip} counter\n arp saddr ip 0.0.0.0 counter\n"
        + " arp operation reply counter\n"
        + f" ip ttl 99 counter\n ether saddr {nic.mac} ether type != {{ ip, arp }} counter\n }}\n}}\n"))
    bcast, svc_mac = "ff:ff:ff:ff:ff:ff", lab.svc.sh("cat", "/sys/class/net/md0/address").stdout.strip()
    frames = [
        Ether(src=nic.mac, dst=bcast) / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67),  # DHCP
        Ether(src=nic.mac, dst=svc_mac) / IP(src=nic.ip, dst=svc_ip) / UDP(sport=4000, dport=9001),  # own
        Ether(src=nic.mac, dst=svc_mac) / IP(src=other_ip, dst=svc_ip) / UDP(sport=4000, dport=9002),  # IP spoof
        Ether(src="52:54:00:66:66:66", dst=svc_mac) / IP(src=nic.ip, dst=svc_ip) / UDP(sport=4000, dport=9003),
        Ether(src=nic.mac, dst=bcast) / IP(src=nic.ip, dst="255.255.255.255") / UDP(sport=67, dport=68),  # rogue
        Ether(src=nic.mac, dst=bcast) / IP(src=nic.ip, dst="255.255.255.255") / UDP(sport=1067, dport=68),
        Ether(src=nic.mac, dst=bcast) / ARP(op=2, hwsrc=nic.mac, psrc=svc_ip, pdst=svc_ip),  # address claim
        Ether(src=nic.mac, dst=bcast) / ARP(op=1, hwsrc=nic.mac, psrc=nic.ip, pdst=svc_ip),  # own: passes
        Ether(src=nic.mac, dst=bcast) / ARP(op=1, hwsrc=nic.mac, psrc="0.0.0.0", pdst=nic.ip),  # probe: passes
        Ether(src=nic.mac, dst=bcast) / ARP(op=1, hwsrc=nic.mac, psrc="0.0.0.0", pdst=other_ip),  # conflict
        bytes(Ether(src=nic.mac, dst=bcast) / ARP(op=2, hwsrc=nic.mac, psrc=other_ip))[:14 + 17],  # cut short
        bytes(Ether(src=nic.mac, dst=svc_mac) / IP(src=other_ip, dst=svc_ip, ttl=99))[:14 + 15],
        Ether(src=nic.mac, dst=bcast, type=0x0806) / (bytes.fromhex("000108000804" "0002")  # 8-byte hardware
                                                       + bytes(ARP(hwsrc=nic.mac, psrc=nic.ip))[8:]),  # addresses
        Ether(src=nic.mac, dst="33:33:00:00:00:01") / IPv6(src="fe80::1", dst="ff02::1") / UDP(dport=9004),
        Ether(src=nic.mac, dst=svc_mac) / Dot1Q(vlan=7) / IP(src=nic.ip, dst=svc_ip) / UDP(sport=4000, dport=9003),
        Ether(src=nic.mac, dst=svc_mac) / Dot1AD(vlan=7) / Dot1Q(vlan=8) / IP(src=nic.ip, dst=svc_ip) / UDP(dport=9003),
        Dot3(src=nic.mac, dst=svc_mac) / LLC() / SNAP() / IP(src=nic.ip, dst=svc_ip) / UDP(dport=9003),
        Ether(src=nic.mac, dst=svc_mac, type=0x8870) / LLC() / SNAP() / IP(src=nic.ip, dst=svc_ip),  # jumbo LLC
        Ether(src=nic.mac, dst=bcast, type=0x8035) / ARP(op=3, hwsrc=nic.mac, hwdst=nic.mac),  # RARP
    ]
    sock = netns_socket(vm.ns.name, socket.AF_PACKET, socket.SOCK_RAW, lambda s: s.bind(("eth0", 0)))
    with sock:
        for frame in frames:
            sock.send(bytes(frame))
    listing = lab.svc.sh("nft", "list", "table", "netdev", "count").stdout
    counts = dict(re.findall(r"(udp dport \d+|arp saddr ip \S+|arp operation reply|ip ttl 99|ether type != "
                             r"\{ ip, arp \}) counter packets (\d+)", listing))
    assert counts == {"udp dport 67": "1", "udp dport 68": "0", "udp dport 9001": "1", "udp dport 9002": "0",
                      "udp dport 9003": "0", f"arp saddr ip {svc_ip}": "0", f"arp saddr ip {nic.ip}": "1",
                      "arp saddr ip 0.0.0.0": "1", "arp operation reply": "0", "ip ttl 99": "0",
                      "ether type != { ip, arp }": "0"}, listing
    dropped = await antispoof.dropped()  # what /metrics exports: the IP and MAC spoofs, the rogue servers, the
    assert dropped["spoofed"] == 6 and dropped["protocol"] >= 9, dropped  # ARP claim; the rest (and the guest's)


def _count(ns, dev: str, rules: str) -> None:
    """Counters on `dev`'s ingress in `ns` (read back with `_counts`)."""
    ns.sh("nft", "-f", "-", input=f"table netdev count {{\n chain in {{\n type filter hook ingress device {dev} "
                                  f"priority 0;\n{rules} }}\n}}\n")


def _counts(ns) -> list[int]:
    listing = ns.sh("nft", "list", "table", "netdev", "count").stdout
    return [int(n) for n in re.findall(r"counter packets (\d+)", listing)]


def _send(ns, *frames) -> None:
    with netns_socket(ns.name, socket.AF_PACKET, socket.SOCK_RAW, lambda s: s.bind(("eth0", 0))) as sock:
        for frame in frames:
            sock.send(bytes(frame))


@pytest.mark.real
async def test_an_unknown_port_exchanges_nothing_with_ours_and_a_gone_tap_sends_nothing(run):
    """A leftover `hst…` veth and a departing VM's tap on the bridge: nothing of theirs reaches the service
    namespace or a VM, nothing of ours reaches them; the known VM and the namespace talk as before."""
    lab = MetadataLab.create(run)
    vm = lab.add_vm("vm")
    net, svc_ip = lab.l3.network, str(lab.l3.dhcp_address)
    stranger = lab.attach("stranger", "hstleft0ver", "52:54:00:66:00:01", str(net[60]))
    gone = lab.attach("gone", "hstg0ne00001", "52:54:00:66:00:02", str(net[61]))
    await Antispoof(lab.host.name).apply({vm.nic.tap: (vm.nic.mac, vm.nic.ip)}, gone=["hstg0ne00001"])
    _count(lab.svc, "md0", " udp dport 9001 counter\n udp dport 9002 counter\n")
    svc_mac, bcast = lab.svc.sh("cat", "/sys/class/net/md0/address").stdout.strip(), "ff:ff:ff:ff:ff:ff"
    for ns in (stranger, gone, vm.ns):  # what comes from our ports (the host's own IPv6 chatter aside)
        _count(ns, "eth0", f" ether saddr {{ {svc_mac}, {vm.nic.mac} }} counter\n")
    for ns, mac, ip in ((stranger, "52:54:00:66:00:01", str(net[60])), (gone, "52:54:00:66:00:02", str(net[61]))):
        _send(ns, Ether(src=mac, dst=svc_mac) / IP(src=ip, dst=svc_ip) / UDP(sport=4000, dport=9001),  # as itself
              Ether(src=vm.nic.mac, dst=svc_mac) / IP(src=vm.nic.ip, dst=svc_ip) / UDP(sport=4000, dport=9002),
              Ether(src=mac, dst=bcast) / ARP(op=1, hwsrc=mac, psrc=ip, pdst=svc_ip))
    _send(vm.ns, Ether(src=vm.nic.mac, dst=svc_mac) / IP(src=vm.nic.ip, dst=svc_ip) / UDP(sport=4000, dport=9001))
    assert lab.svc.sh("ping", "-c1", "-W1", vm.nic.ip, rcs=(0, 1)).returncode == 0  # ours to ours
    for ip in (str(net[60]), str(net[61])):
        assert lab.svc.sh("ping", "-c1", "-W1", ip, rcs=(0, 1)).returncode == 1
    assert _counts(lab.svc) == [1, 0]  # the VM's own datagram only
    assert _counts(stranger) == [0] and _counts(gone) == [0]  # not even the namespace's ARP broadcasts
    assert _counts(vm.ns)[0] > 0


@pytest.mark.real
async def test_a_dhcp_message_must_carry_the_senders_own_mac_as_chaddr(run):
    """RELEASE/DECLINE/REQUEST/DISCOVER as another NIC (its MAC as chaddr) never reach the DHCP server, nor
    one split after 24 bytes of BOOTP, its chaddr in the second fragment."""
    lab = MetadataLab.create(run)
    vm, other = lab.add_vm("vm"), lab.add_vm("other")
    await Antispoof(lab.host.name).apply({v.nic.tap: (v.nic.mac, v.nic.ip) for v in lab.vms})
    _count(lab.svc, "md0", " udp dport 67 counter\n")
    svc_ip = str(lab.l3.dhcp_address)

    def dhcp(kind: str, chaddr: str, src: str = "0.0.0.0", dst: str = "255.255.255.255", **bootp) -> Ether:
        return (Ether(src=vm.nic.mac, dst="ff:ff:ff:ff:ff:ff") / IP(src=src, dst=dst) / UDP(sport=68, dport=67)
                / BOOTP(op=1, chaddr=bytes.fromhex(chaddr.replace(":", "")) + bytes(10), **bootp)
                / DHCP(options=[("message-type", kind), ("server_id", svc_ip), "end"]))

    _send(vm.ns, *(dhcp(kind, other.nic.mac) for kind in ("discover", "request", "decline")),
          dhcp("release", other.nic.mac, src=vm.nic.ip, dst=svc_ip, ciaddr=other.nic.ip),
          dhcp("discover", vm.nic.mac, htype=6), dhcp("discover", vm.nic.mac, hlen=16),
          *(Ether(src=vm.nic.mac, dst="ff:ff:ff:ff:ff:ff") / part
            for part in fragment(dhcp("discover", other.nic.mac)[IP], fragsize=32)))
    assert _counts(lab.svc) == [0]
    _send(vm.ns, dhcp("discover", vm.nic.mac), dhcp("release", vm.nic.mac, src=vm.nic.ip, dst=svc_ip))
    assert _counts(lab.svc) == [2]
