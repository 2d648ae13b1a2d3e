"""Anti-spoofing table: its end state in nftables, and the frames it lets through a real bridge (the text it
renders: tests/unit/flatnet/test_antispoof.py)."""

from __future__ import annotations

import re
import socket

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

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
    """Frames from a VM, counted where they arrive (the service namespace's ingress)."""
    lab = MetadataLab.create(run)
    vm = lab.add_vm("vm")
    nic, svc_ip, other_ip = vm.nic, str(lab.l3.dhcp_address), str(lab.l3.network[99])
    await Antispoof(lab.host.name).apply({nic.tap: (nic.mac, nic.ip)})
    lab.svc.sh("nft", "-f", "-", input=(
        "table netdev count {\n chain in {\n type filter hook ingress device md0 priority 0;\n"
        + "".join(f" udp dport {port} counter\n" for port in (67, 68, 9001, 9002, 9003))
        + f" arp saddr ip {svc_ip} counter\n ether saddr {nic.mac} ether type ip6 counter\n }}\n}}\n"))
    bcast, svc_mac = "ff:ff:ff:ff:ff:ff", lab.svc.sh("cat", "/sys/class/net/md0/address").stdout.strip()
    frames = [
        Ether(src=nic.mac, dst=bcast) / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67),  # DHCP
        Ether(src=nic.mac, dst=svc_mac) / IP(src=nic.ip, dst=svc_ip) / UDP(sport=4000, dport=9001),  # own
        Ether(src=nic.mac, dst=svc_mac) / IP(src=other_ip, dst=svc_ip) / UDP(sport=4000, dport=9002),  # IP spoof
        Ether(src="52:54:00:66:66:66", dst=svc_mac) / IP(src=nic.ip, dst=svc_ip) / UDP(sport=4000, dport=9003),
        Ether(src=nic.mac, dst=bcast) / IP(src=nic.ip, dst="255.255.255.255") / UDP(sport=67, dport=68),  # rogue
        Ether(src=nic.mac, dst=bcast) / ARP(op=2, hwsrc=nic.mac, psrc=svc_ip, pdst=svc_ip),  # address claim
        Ether(src=nic.mac, dst="33:33:00:00:00:01") / IPv6(src="fe80::1", dst="ff02::1") / UDP(dport=9004),
    ]
    sock = netns_socket(vm.ns.name, socket.AF_PACKET, socket.SOCK_RAW, lambda s: s.bind(("eth0", 0)))
    with sock:
        for frame in frames:
            sock.send(bytes(frame))
    listing = lab.svc.sh("nft", "list", "table", "netdev", "count").stdout
    counts = dict(re.findall(r"(udp dport \d+|arp saddr ip \S+|ether type ip6) counter packets (\d+)", listing))
    assert counts == {"udp dport 67": "1", "udp dport 68": "0", "udp dport 9001": "1", "udp dport 9002": "0",
                      "udp dport 9003": "0", f"arp saddr ip {svc_ip}": "0", "ether type ip6": "0"}, listing
