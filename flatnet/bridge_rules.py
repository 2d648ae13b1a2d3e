"""nftables `bridge` rules on the host that keep each host's flat services to its own VMs.

One table of our own, written by `flatnet.nft` (whole, atomic, only when its fingerprint differs;
other tables are never touched). For every L2 bridge with flat namespaces, at its uplink port (the
physical device or the VLAN sub-interface, `L2Spec.uplink`):

- nothing from a flat namespace leaves by the uplink, and nothing from the uplink reaches one;
- frames addressed to a namespace's MAC never leave by the uplink (unknown-unicast floods);
- DHCP requests from the NICs we serve never leave by the uplink; DHCP of any other MAC still does,
  so DHCP servers elsewhere on the physical network keep serving their own clients (zstack#205);
- ARP for a DHCP address never leaves by the uplink: the address exists on every host.

Frames for the metadata address from a served NIC are re-addressed to the MAC of that NIC's namespace
before the bridge looks up its forwarding table, for guests that ignore DHCP option 121.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from agentkit.addr import METADATA_ADDRESS
from flatnet.nft import NftTable


@dataclass(frozen=True)
class PortRules:
    """One flat namespace's port on an L2 bridge, and the NICs it serves."""

    uplink: str
    port: str
    port_mac: str
    dhcp_address: str
    vm_macs: frozenset[str]


def _set(items: Iterable[str], quote: bool = False) -> str:
    values = sorted(set(items))
    return "{ " + ", ".join(f'"{v}"' if quote else v for v in values) + " }"


def _uplink_rules(uplink: str, ports: list[PortRules]) -> list[str]:
    up = f'"{uplink}"'
    names = _set((p.port for p in ports), quote=True)
    rules = [
        f"iifname {names} oifname {up} counter drop",
        f"iifname {up} oifname {names} counter drop",
        f"oifname {up} ether daddr {_set(p.port_mac for p in ports)} counter drop",
        f"oifname {up} arp daddr ip {_set(p.dhcp_address for p in ports)} counter drop",
    ]
    macs = {m for p in ports for m in p.vm_macs}
    if macs:
        rules.append(f"oifname {up} ether saddr {_set(macs)} udp sport 68 udp dport 67 counter drop")
    return rules


def body(ports: Iterable[PortRules], steer_metadata: bool = True) -> list[str] | None:
    """The table's body, or None when no flat namespace is left on this host (the table is then deleted)."""
    ports = list(ports)
    by_uplink: dict[str, list[PortRules]] = defaultdict(list)
    for p in ports:
        by_uplink[p.uplink].append(p)
    if not by_uplink:
        return None
    lines = ["\tchain forward {", "\t\ttype filter hook forward priority filter; policy accept;"]
    for uplink in sorted(by_uplink):
        lines += [f"\t\t{r}" for r in _uplink_rules(uplink, by_uplink[uplink])]
    lines.append("\t}")
    steer = sorted({(m, p.port_mac) for p in ports for m in p.vm_macs})
    if steer_metadata and steer:
        pairs = ", ".join(f"{vm} : {ns}" for vm, ns in steer)
        lines += ["\tchain prerouting {", "\t\ttype filter hook prerouting priority dstnat; policy accept;",
                  f"\t\tip daddr {METADATA_ADDRESS} ether daddr set ether saddr map {{ {pairs} }}", "\t}"]
    return lines


class BridgeRules:
    """Keeps our table equal to the rendering of the current ports (`flatnet.nft`: nothing written when current)."""

    def __init__(self, table: str, steer_metadata: bool = True):
        self._table = NftTable("bridge", table)
        self.steer_metadata = steer_metadata

    async def sync(self, ports: Iterable[PortRules]) -> None:
        await self._table.sync(body(ports, self.steer_metadata))
