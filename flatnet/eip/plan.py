"""What the EIP dataplane should look like on this host, computed from desired state alone.

One EIP namespace per (public L3, private L3) pair that has at least one EIP on this host, never one
per EIP: 1,000 EIPs from one public L3 onto one private L3 are one namespace whose NAT maps have
1,000 elements. A pair (rather than one namespace per public L3) keeps routing inside the namespace
to two connected subnets, so private L3s with overlapping CIDRs never meet in one routing table.

The EIPs of a VM moving live to this host (`VmSpec.incoming`) are staged: their pair is built whole (devices,
NAT maps, steering) except the VIP addresses, which alone make a host answer for a VIP (ARP, and the NAT
applies only to VIPs held here: rules.py). When the VM becomes this host's, adding them is the whole switch.

Invalid input is logged with its ids and treated as absent (the rest still applies).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from agentkit.model import L2Spec, L3Spec, NicSpec, Service, VmSpec

log = logging.getLogger(__name__)
HOST_PUBLIC_PREFIX, HOST_PRIVATE_PREFIX = "hsep", "hsei"  # + 8 hex: host ends of the veth pairs
NS_PUBLIC_DEV, NS_PRIVATE_DEV = "pub", "priv"  # the same names inside every EIP namespace


@dataclass(frozen=True, order=True)
class Binding:
    """One EIP: the VIP answered on the public side, NATed to one VM NIC on the private side."""

    vip: ipaddress.IPv4Address
    private_ip: ipaddress.IPv4Address
    mac: str
    tap: str
    eip_uuid: str
    nic_uuid: str
    staged: bool = False  # its VM moves live to this host: everything is in place but the VIP address


@dataclass(frozen=True)
class PairPlan:
    """One EIP namespace: its names, both subnets and the EIPs it carries (sorted by VIP)."""

    key: str
    netns: str
    public_l3: str
    private_l3: str
    public_bridge: str
    private_bridge: str
    public_net: ipaddress.IPv4Network
    public_gateway: ipaddress.IPv4Address | None
    public_mtu: int
    private_net: ipaddress.IPv4Network
    private_gateway: ipaddress.IPv4Address | None
    private_mtu: int
    bindings: tuple[Binding, ...]

    @property
    def answered(self) -> frozenset[ipaddress.IPv4Address]:
        """The VIPs this host answers for: held on `pub` (the staged ones are not)."""
        return frozenset(b.vip for b in self.bindings if not b.staged)

    @property
    def host_public_dev(self) -> str:
        return HOST_PUBLIC_PREFIX + self.key

    @property
    def host_private_dev(self) -> str:
        return HOST_PRIVATE_PREFIX + self.key


def pair_key(public_l3: str, private_l3: str) -> str:
    """8 hex chars naming a pair on every host (device names are limited to 15 characters)."""
    return hashlib.sha1(f"{public_l3}/{private_l3}".encode()).hexdigest()[:8]


def _gateway(l3: L3Spec) -> ipaddress.IPv4Address | None:
    return ipaddress.IPv4Address(l3.gateway) if l3.gateway else None


@dataclass(frozen=True)
class _Candidate:
    binding: Binding
    public: L3Spec
    private: L3Spec
    public_l2: L2Spec
    private_l2: L2Spec


def _candidate(nic: NicSpec, l2s: dict[str, L2Spec], l3s: dict[str, L3Spec], staged: bool) -> _Candidate | None:
    """The NIC's EIP if every object it refers to exists and its addresses fit their subnets."""
    eip = nic.eip
    if eip is None:
        return None
    ids = {"nic": nic.uuid, "eip": eip.uuid, "vip": eip.vip}
    private, public = l3s.get(nic.l3_uuid), l3s.get(eip.public_l3_uuid)
    if private is None or Service.EIP not in private.services:
        log.info("EIP ignored: the NIC's L3 is unknown or has no EIP service", extra={"fields": ids})
        return None
    if public is None or public.uuid == private.uuid:
        log.warning("EIP ignored: public L3 unknown or equal to the private one", extra={"fields": ids})
        return None
    public_l2, private_l2 = l2s.get(public.l2_uuid), l2s.get(private.l2_uuid)
    if public_l2 is None or private_l2 is None:
        log.warning("EIP ignored: an L2 of its L3s is unknown", extra={"fields": ids})
        return None
    try:
        vip, private_ip = ipaddress.IPv4Address(eip.vip), ipaddress.IPv4Address(nic.ip)
    except ValueError:
        log.warning("EIP ignored: VIP or NIC address is not IPv4", extra={"fields": ids})
        return None
    reserved = {_gateway(public), public.network.network_address, public.network.broadcast_address}
    if vip not in public.network or vip in reserved or private_ip not in private.network:
        log.warning("EIP ignored: VIP outside its public subnet (or reserved) or NIC IP outside its L3",
                    extra={"fields": ids})
        return None
    binding = Binding(vip, private_ip, nic.mac, nic.tap, eip.uuid, nic.uuid, staged)
    return _Candidate(binding, public, private, public_l2, private_l2)


def _unique(candidates: Iterable[_Candidate]) -> list[_Candidate]:
    """Drop a second claim on a VIP or on a private address (the lower NIC uuid wins, stably)."""
    kept: list[_Candidate] = []
    vips: set[ipaddress.IPv4Address] = set()
    privates: set[tuple[str, ipaddress.IPv4Address]] = set()
    for c in sorted(candidates, key=lambda c: c.binding.nic_uuid):
        b = c.binding
        if b.vip in vips or (c.private.uuid, b.private_ip) in privates:
            log.error("EIP ignored: its VIP or private address is already bound on this host",
                      extra={"fields": {"nic": b.nic_uuid, "eip": b.eip_uuid, "vip": str(b.vip)}})
            continue
        vips.add(b.vip)
        privates.add((c.private.uuid, b.private_ip))
        kept.append(c)
    return kept


def build(l2s: dict[str, L2Spec], l3s: dict[str, L3Spec], vms: dict[str, VmSpec],
          netns_prefix: str) -> dict[str, PairPlan]:
    """Desired EIP namespaces keyed by namespace name (staged EIPs too); empty when this host has no EIP."""
    found = (_candidate(nic, l2s, l3s, vm.incoming is not None) for vm in vms.values() for nic in vm.nics)
    groups: dict[tuple[str, str], list[_Candidate]] = {}
    for c in _unique(c for c in found if c is not None):
        groups.setdefault((c.public.uuid, c.private.uuid), []).append(c)
    plans: dict[str, PairPlan] = {}
    for (public_uuid, private_uuid), members in sorted(groups.items()):
        first = members[0]
        key = pair_key(public_uuid, private_uuid)
        netns = netns_prefix + key
        plans[netns] = PairPlan(
            key=key, netns=netns, public_l3=public_uuid, private_l3=private_uuid,
            public_bridge=first.public_l2.bridge, private_bridge=first.private_l2.bridge,
            public_net=first.public.network, public_gateway=_gateway(first.public), public_mtu=first.public.mtu,
            private_net=first.private.network, private_gateway=_gateway(first.private),
            private_mtu=first.private.mtu,
            bindings=tuple(sorted(m.binding for m in members)),
        )
    return plans
