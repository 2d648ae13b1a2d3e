"""Anti-spoofing on every VM tap: a VM may only send as its own NIC (source MAC and IPv4 address).

This is what lets the metadata server trust a request's source address. Rules live in one nftables
`bridge` table of our own, written by `flatnet.nft` (whole, atomic, skipped when its fingerprint is
current), so applying the same taps twice changes nothing and other tables are never touched. Per tap:

- Ethernet source must be the NIC's MAC; only IPv4 and ARP frames pass (no IPv6, no VLAN-tagged frames);
- ARP sender MAC must be the NIC's, sender IP the NIC's or 0.0.0.0 (RFC 5227 probes);
- IPv4 source must be the NIC's, except DHCP requests from 0.0.0.0:68 to port 67;
- no DHCP server replies (UDP source port 67) from VMs: a rogue DHCP server spoofs the L3's.

A tap whose MAC or IP is malformed gets a chain that drops everything (fail closed). Taps are matched
by name, so rules may precede the tap's creation.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping

from flatnet.nft import NftTable

log = logging.getLogger(__name__)
TABLE = "hs_antispoof"
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


def _tap_rules(tap: str, mac: str, ip: str) -> list[str]:
    mac = mac.lower()
    try:
        addr = ipaddress.IPv4Address(ip)
    except ValueError:
        addr = None
    if addr is None or not _MAC.match(mac):
        log.error("malformed NIC address, dropping all its traffic",
                  extra={"fields": {"tap": tap, "mac": mac, "ip": ip}})
        return ["drop"]
    return [
        f"ether saddr != {mac} drop",
        "ether type != { ip, arp } drop",
        f"arp saddr ether != {mac} drop",
        f"arp saddr ip != {{ 0.0.0.0, {addr} }} drop",
        "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
        f"ip saddr != {addr} drop",
        "udp sport 67 drop",
    ]


def body(taps: Mapping[str, tuple[str, str]]) -> list[str]:
    """The table's body for `taps` (tap name -> (mac, ipv4)): a vmap by tap name, one chain per tap."""
    chains: dict[str, tuple[str, list[str]]] = {}
    for tap in sorted(taps):
        if not _IFNAME.match(tap):
            raise ValueError(f"not an interface name: {tap!r}")
        chain = "tap_" + re.sub(r"[^A-Za-z0-9_]", "_", tap)
        if chain in chains:
            raise ValueError(f"taps {chains[chain][0]!r} and {tap!r} map to one chain name")
        chains[chain] = (tap, _tap_rules(tap, *taps[tap]))
    lines = ["\tchain prerouting {", "\t\ttype filter hook prerouting priority -200; policy accept;"]
    if chains:
        vmap = ", ".join(f'"{tap}" : jump {chain}' for chain, (tap, _) in chains.items())
        lines.append(f"\t\tiifname vmap {{ {vmap} }}")
    lines.append("\t}")
    for chain, (tap, rules) in chains.items():
        lines += [f"\tchain {chain} {{", f'\t\tcomment "anti-spoofing for {tap}"', *(f"\t\t{r}" for r in rules), "\t}"]
    return lines


class Antispoof:
    """The anti-spoofing table of one network namespace (None: the host's own, where the VM taps are)."""

    def __init__(self, netns: str | None = None, table: str = TABLE):
        self._table = NftTable("bridge", table, netns)

    async def apply(self, taps: Mapping[str, tuple[str, str]]) -> None:
        """Make the table hold exactly the rules for `taps` (tap name -> (mac, ipv4)), atomically."""
        await self._table.sync(body(taps))
