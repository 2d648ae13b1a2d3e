"""Anti-spoofing on the agent's bridges, failing closed: a VM sends only as its own NIC, and a port the
agent does not know exchanges nothing with anything of ours.

This is what makes a request's source address an identity (docs/metadata.md). One nftables `bridge`
table of our own, written whole by `flatnet.nft` (atomic, skipped when its fingerprint is current), so
applying the same ports twice changes nothing and other tables are never touched. Ports come in kinds:

- a known NIC's tap (`nics`: tap -> (mac, ipv4)) gets its own chain at `prerouting`, before the bridge
  learns the source MAC: the Ethernet source must be the NIC's MAC; only IPv4 and ARP pass (no IPv6, no
  VLAN tags), and only with a whole header (Ethernet/IPv4 ARP, 20 bytes of IPv4); the ARP sender must be
  the NIC's MAC and IP (or 0.0.0.0 in an RFC 5227 probe of its own IP); the IPv4 source must be the
  NIC's, except DHCP requests from 0.0.0.0:68; a DHCP client message must carry the NIC's MAC as
  `chaddr` (htype Ethernet, hlen 6, never the first fragment of a split datagram); no DHCP server
  replies (UDP from port 67 or to port 68). A malformed MAC or IP gets a chain that drops everything.
- the tap of a domain that still exists but is no longer wanted (`gone`: deleted or moved away while its
  qemu still runs, or its destroy failed) drops everything at `prerouting` until the domain is gone.
- the agent's own ports pass as they are: the uplinks (`ports`) and the host ends of its namespaces'
  veths (`hsf…` flat services, `hsep…`/`hsei…` EIP).
- any other port is unknown: a hand-defined domain's tap, a leftover veth, a tap whose chain is not
  written yet. At `forward`, no frame from an unknown port reaches a port of ours (known tap, uplink,
  namespace) and no frame of ours reaches it. Scoping by our own ports leaves the host's other bridges
  alone without `meta ibrname` (nft_meta_bridge is missing from some kernels).

A known NIC's MAC is accepted only from its own tap, so no other port can make the bridge learn it and
receive that NIC's traffic. Taps are matched by name, so rules may precede the tap's creation. The frames
of known NICs dropped are counted by reason (`Antispoof.dropped`, `/metrics`
`hoststack_flatnet_antispoof_dropped_total{reason}`).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping

from flatnet.eip.plan import HOST_PRIVATE_PREFIX, HOST_PUBLIC_PREFIX
from flatnet.l3ns import HOST_DEV_PREFIX
from flatnet.nft import NftTable

log = logging.getLogger(__name__)
TABLE = "hs_antispoof"
AGENT_PORTS = tuple(p + "*" for p in (HOST_DEV_PREFIX, HOST_PUBLIC_PREFIX, HOST_PRIVATE_PREFIX))  # our veths' host ends
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_BOOTP_HW = "@th,72,16"  # htype . hlen of a BOOTP message after the 8-byte UDP header
_BOOTP_CHADDR = "@th,288,48"  # its chaddr's first six bytes (offset 28)
_ETHERNET_6 = "0x0106"
DROPS = ("spoofed", "protocol")  # the table's named counters: what a VM's frames were dropped for
_SPOOFED, _PROTOCOL = (f'counter name "{name}" drop' for name in DROPS)


def _address(tap: str, mac: str, ip: str) -> tuple[str, ipaddress.IPv4Address] | None:
    """(mac, ip) normalized, or None (logged) when either is malformed."""
    mac = mac.lower()
    try:
        addr = ipaddress.IPv4Address(ip)
    except ValueError:
        addr = None
    if addr is None or not _MAC.match(mac):
        log.error("malformed NIC address, dropping all its traffic",
                  extra={"fields": {"tap": tap, "mac": mac, "ip": ip}})
        return None
    return mac, addr


def _tap_rules(mac: str, addr: ipaddress.IPv4Address) -> list[str]:
    return [
        f"ether saddr != {mac} {_SPOOFED}",
        f"ether type != {{ ip, arp }} {_PROTOCOL}",
        # A header cut short fails every match below that reads past its end (the rule does not apply), and
        # an uplink pads it with zeros: `meta length` (from the network header) lets only whole ones on.
        f"ether type arp meta length < 28 {_PROTOCOL}",
        f"ether type ip meta length < 20 {_PROTOCOL}",
        f"arp htype . arp ptype . arp hlen . arp plen != {{ 1 . ip . 6 . 4 }} {_PROTOCOL}",  # what `arp saddr` reads
        f"arp saddr ether != {mac} {_SPOOFED}",
        f"arp saddr ip != {{ 0.0.0.0, {addr} }} {_SPOOFED}",
        f"arp saddr ip 0.0.0.0 arp daddr ip != {addr} {_SPOOFED}",  # a probe for another's address is a claim
        f"udp dport 67 ip frag-off & 0x2000 != 0 {_SPOOFED}",
        f"udp dport 67 {_BOOTP_HW} != {_ETHERNET_6} {_SPOOFED}",
        f"udp dport 67 {_BOOTP_CHADDR} != 0x{mac.replace(':', '')} {_SPOOFED}",
        "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
        f"ip saddr != {addr} {_SPOOFED}",
        f"udp sport 67 {_SPOOFED}",
        f"udp dport 68 {_SPOOFED}",  # clients take a reply from any source port
    ]


def _ifname(name: str) -> str:
    if not _IFNAME.match(name):
        raise ValueError(f"not an interface name: {name!r}")
    return name


def _uplinks(ports: Iterable[str]) -> set[str]:
    """The valid names among `ports`; a malformed one is logged and left out (it cannot be a device)."""
    valid = {p for p in ports if _IFNAME.match(p)}
    for bad in sorted(set(ports) - valid):
        log.error("malformed uplink name ignored", extra={"fields": {"port": bad}})
    return valid


def _set(name: str, kind: str, elements: Iterable[str]) -> list[str]:
    items = sorted(set(elements))
    lines = [f"\tset {name} {{", f"\t\t{kind}"]
    if items:
        lines.append(f"\t\telements = {{ {', '.join(items)} }}")
    return [*lines, "\t}"]


def _forward() -> list[str]:
    """Unknown ports and ours never meet: a frame of ours goes only to ours, and none comes from elsewhere."""
    agent = "{ " + ", ".join(f'"{p}"' for p in AGENT_PORTS) + " }"
    return [
        "\tchain forward {", "\t\ttype filter hook forward priority -200; policy accept;",
        "\t\tiifname @ours jump from_ours", f"\t\tiifname {agent} jump from_ours",
        "\t\toifname @ours drop", f"\t\toifname {agent} drop", "\t}",
        "\tchain from_ours {", "\t\toifname @ours accept", f"\t\toifname {agent} accept", "\t\tdrop", "\t}",
    ]


def body(nics: Mapping[str, tuple[str, str]], gone: Iterable[str] = (), ports: Iterable[str] = ()) -> list[str]:
    """The table's body: `nics` (tap -> (mac, ipv4)) filtered per tap, `gone` taps dropped, `ports` (the
    uplinks) and the agent's namespace veths passed, everything else kept apart from them."""
    chains: dict[str, tuple[str, list[str]]] = {}
    macs: dict[str, str] = {}  # tap -> its NIC's (valid) MAC
    for tap in sorted(nics):
        chain = "tap_" + re.sub(r"[^A-Za-z0-9_]", "_", _ifname(tap))
        if chain in chains:
            raise ValueError(f"taps {chains[chain][0]!r} and {tap!r} map to one chain name")
        found = _address(tap, *nics[tap])
        chains[chain] = (tap, _tap_rules(*found) if found else ["drop"])
        if found:
            macs[tap] = found[0]
    dropped = sorted(_ifname(t) for t in set(gone) - set(nics))
    verdicts = [f'"{tap}" : jump {chain}' for chain, (tap, _) in chains.items()] + [f'"{t}" : drop' for t in dropped]
    lines = [*(f"\tcounter {name} {{}}" for name in DROPS),
             *_set("ours", "type ifname", [f'"{p}"' for p in {*nics, *_uplinks(ports)}]),
             *_set("nic_macs", "type ether_addr", macs.values()),
             *_set("nic_ports", "typeof ether saddr . iifname", [f'{m} . "{t}"' for t, m in macs.items()]),
             "\tchain prerouting {", "\t\ttype filter hook prerouting priority -200; policy accept;"]
    if verdicts:
        lines.append(f"\t\tiifname vmap {{ {', '.join(verdicts)} }}")
    lines += [f"\t\tether saddr @nic_macs ether saddr . iifname != @nic_ports {_SPOOFED}", "\t}", *_forward()]
    for chain, (tap, rules) in chains.items():
        lines += [f"\tchain {chain} {{", f'\t\tcomment "anti-spoofing for {tap}"', *(f"\t\t{r}" for r in rules), "\t}"]
    return lines


class Antispoof:
    """The anti-spoofing table of one network namespace (None: the host's own, where the VM taps are)."""

    def __init__(self, netns: str | None = None, table: str = TABLE):
        self._table = NftTable("bridge", table, netns, counters=DROPS)

    async def apply(self, nics: Mapping[str, tuple[str, str]], *, gone: Iterable[str] = (),
                    ports: Iterable[str] = ()) -> None:
        """Make the table hold exactly the rules for these ports (see `body`), atomically."""
        await self._table.sync(body(nics, gone, ports))

    async def dropped(self) -> dict[str, int]:
        """VM frames dropped (a rewrite of the table does not reset the counts), by reason: `spoofed` (another
        MAC or IP, another NIC's MAC from this tap or as DHCP `chaddr`, a DHCP server's reply) and `protocol`
        (neither IPv4 nor ARP: IPv6, VLAN tags; or a header cut short). What gone taps and unknown ports send
        is not counted."""
        return await self._table.counters()
