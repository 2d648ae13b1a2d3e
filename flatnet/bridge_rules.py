"""nftables `bridge` rules on the host that keep each host's flat services to its own VMs.

One table of our own, written by `flatnet.nft` (whole, atomic, only when its fingerprint differs;
other tables are never touched). For every L2 bridge with flat namespaces, at its uplink port (the
physical device or the VLAN sub-interface, `L2Spec.uplink`):

- nothing from a flat namespace leaves by the uplink, and nothing from the uplink reaches one;
- frames addressed to a namespace's MAC never leave by the uplink (unknown-unicast floods);
- DHCP requests from the NICs we serve never leave by the uplink; DHCP of any other MAC still does,
  so DHCP servers elsewhere on the physical network keep serving their own clients (zstack#205);
- ARP for a DHCP address never leaves by the uplink: the address exists on every host.

Where one bridge carries several L3s (overlapping CIDRs and shared DHCP addresses included), frames
from the tap of an L3's NIC never reach another L3's namespace, nor the other way round: a request is
answered by the namespace of the NIC's own L3 or not at all. Frames into the flat namespaces are
limited per VM interface (`guest_pps`, AWS IMDS's 1,024 packets/s), so a flood fills no socket that
other VMs share; the drops are counted in the named counter `guest_pps_dropped`.

Frames for the metadata address from a served NIC's tap are re-addressed to the MAC of that NIC's
namespace before the bridge looks up its forwarding table, for guests that ignore DHCP option 121. The
map is keyed by tap: interface names are unique on a host, MACs need not be.

Bad data never stops the others: `clean` drops (and names) ports and NICs whose names or addresses
could not be rendered, and taps claimed twice; `BridgeRules.sync` writes the rest.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from agentkit.addr import METADATA_ADDRESS
from agentkit.fairness.ratelog import RateLimitedLog
from flatnet.nft import NftTable, sync_isolating

log = logging.getLogger(__name__)
_ratelog = RateLimitedLog(log, interval=600.0, burst=1)  # a bad item is named again on every apply
PPS_COUNTER = "guest_pps_dropped"
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


@dataclass(frozen=True)
class PortRules:
    """One flat namespace's port on an L2 bridge, and this host's NICs it serves (their MACs and taps)."""

    uplink: str
    port: str
    port_mac: str
    dhcp_address: str
    vm_macs: frozenset[str]
    vm_taps: frozenset[str] = frozenset()
    bridge: str = ""
    l3_uuid: str = field(default="", compare=False)


def _address(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def clean(ports: Iterable[PortRules]) -> tuple[list[PortRules], list[str]]:
    """The ports that can be rendered, with only their renderable NICs; and what was dropped, and why."""
    problems: list[str] = []
    ok: list[PortRules] = []
    for p in ports:
        if not all(_IFNAME.match(n) for n in (p.uplink, p.port)) or not _MAC.match(p.port_mac) \
                or not _address(p.dhcp_address) or (p.bridge and not _IFNAME.match(p.bridge)):
            problems.append(f"port {p.port!r} of L3 {p.l3_uuid}: bad name or address, its rules are left out")
            continue
        macs = frozenset(m for m in p.vm_macs if _MAC.match(m))
        taps = frozenset(t for t in p.vm_taps if _IFNAME.match(t))
        problems += [f"L3 {p.l3_uuid}: bad NIC MAC {m!r} left out" for m in sorted(p.vm_macs - macs)]
        problems += [f"L3 {p.l3_uuid}: bad tap name {t!r} left out" for t in sorted(p.vm_taps - taps)]
        ok.append(replace(p, vm_macs=macs, vm_taps=taps))
    owners: dict[str, list[str]] = defaultdict(list)
    for p in ok:
        for tap in p.vm_taps:
            owners[tap].append(p.port)
    twice = {tap for tap, where in owners.items() if len(where) > 1}
    problems += [f"tap {t!r} claimed by the NICs of several L3s {sorted(owners[t])}: left out" for t in sorted(twice)]
    return [replace(p, vm_taps=p.vm_taps - twice) for p in ok], problems


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


def _l3_rules(ports: list[PortRules]) -> list[str]:
    """On a bridge shared by several L3s: a namespace talks only with the taps of its own L3's NICs."""
    rules = []
    for p in sorted(ports, key=lambda p: p.port):
        others = {t for o in ports if o.port != p.port for t in o.vm_taps} - p.vm_taps
        if others:
            rules += [f'oifname "{p.port}" iifname {_set(others, quote=True)} counter drop',
                      f'iifname "{p.port}" oifname {_set(others, quote=True)} counter drop']
    return rules


def body(ports: Iterable[PortRules], steer_metadata: bool = True, guest_pps: int = 0) -> list[str] | None:
    """The table's body (for clean ports), or None when no flat namespace is left on this host."""
    ports = list(ports)
    by_uplink: dict[str, list[PortRules]] = defaultdict(list)
    by_bridge: dict[str, list[PortRules]] = defaultdict(list)
    for p in ports:
        by_uplink[p.uplink].append(p)
        by_bridge[p.bridge].append(p)
    if not by_uplink:
        return None
    lines = []
    if guest_pps:
        lines += [f"\tcounter {PPS_COUNTER} {{}}",
                  "\tset guest_pps {", "\t\ttype ifname", "\t\tsize 65535", "\t\tflags dynamic,timeout",
                  "\t\ttimeout 1m", "\t}"]
    lines += ["\tchain forward {", "\t\ttype filter hook forward priority filter; policy accept;"]
    for uplink in sorted(by_uplink):
        lines += [f"\t\t{r}" for r in _uplink_rules(uplink, by_uplink[uplink])]
    for bridge in sorted(by_bridge):
        lines += [f"\t\t{r}" for r in _l3_rules(by_bridge[bridge])]
    if guest_pps:
        lines.append(f"\t\toifname {_set((p.port for p in ports), quote=True)} update @guest_pps {{ iifname limit "
                     f'rate over {guest_pps}/second burst {guest_pps} packets }} counter name "{PPS_COUNTER}" drop')
    lines.append("\t}")
    steer = sorted({(t, p.port_mac) for p in ports for t in p.vm_taps})
    if steer_metadata and steer:
        pairs = ", ".join(f'"{tap}" : {ns}' for tap, ns in steer)
        lines += ["\tchain prerouting {", "\t\ttype filter hook prerouting priority dstnat; policy accept;",
                  f"\t\tip daddr {METADATA_ADDRESS} ether daddr set iifname map {{ {pairs} }}", "\t}"]
    return lines


class BridgeRules:
    """Keeps our table equal to the rendering of the current ports (`flatnet.nft`: nothing written when current).

    `skipped` counts ports and NICs left out of the last write (bad data, or refused by nft); `pps_dropped`
    the frames over `guest_pps`, across rewrites of the table."""

    def __init__(self, table: str, steer_metadata: bool = True, guest_pps: int = 0):
        self._table = NftTable("bridge", table, counters=(PPS_COUNTER,) if guest_pps else ())
        self.steer_metadata = steer_metadata
        self.guest_pps = guest_pps
        self.skipped = 0
        self._pps_logged = 0

    async def sync(self, ports: Iterable[PortRules]) -> None:
        """Write the rules of every port that can be written; raises NftError only when nft refuses even the
        table without any of them."""
        good, problems = clean(ports)
        refused = await sync_isolating(self._table, good, self._render)
        problems += [f"port {p.port!r} of L3 {p.l3_uuid}: refused by nft, its rules are left out" for p in refused]
        self.skipped = len(problems)
        for problem in problems:
            _ratelog.log(logging.ERROR, problem, "flat network rule not applied: %s", problem)
        await self._report_drops()

    async def _report_drops(self) -> None:
        """A log line when guests' frames were dropped since the last apply: at most one per apply (on every
        change and at every resync), however many frames."""
        dropped = await self.pps_dropped()
        if dropped > self._pps_logged:
            log.warning("guest frames over the per-interface rate dropped", extra={"fields": {
                "dropped": dropped - self._pps_logged, "total": dropped, "rate": self.guest_pps}})
        self._pps_logged = dropped

    async def pps_dropped(self) -> int:
        """Frames into the flat namespaces dropped for exceeding `guest_pps`, since this process started."""
        return (await self._table.counters()).get(PPS_COUNTER, 0)

    def _render(self, ports: Sequence[PortRules]) -> list[str] | None:
        return body(ports, self.steer_metadata, self.guest_pps)
