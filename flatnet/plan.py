"""Which L3s need flat services on this host, computed from the host's whole desired state.

An L3 is served here when it offers DHCP, has a DHCP address inside its subnet, its L2 is known, and at
least one of this host's VMs has a NIC on it. Everything a namespace needs is derived here, so the
service compares a plain value with the last one to see what changed.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from agentkit.addr import METADATA_ADDRESS
from agentkit.model import DnsRecord, L2Spec, L3Spec, NicSpec, Service, VmSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedL3:
    """One L3 served on this host: its spec, its L2, this host's NICs on it and all its DNS records."""

    l3: L3Spec
    l2: L2Spec
    nics: tuple[tuple[VmSpec, NicSpec], ...]
    records: tuple[DnsRecord, ...]
    dhcp_address: str  # the L3's, checked to be inside its subnet

    @property
    def addresses(self) -> frozenset[tuple[str, int]]:
        return frozenset({(self.dhcp_address, self.l3.network.prefixlen), (METADATA_ADDRESS, 32)})

    @property
    def neighbours(self) -> dict[str, str]:
        return {nic.ip: nic.mac for _, nic in self.nics}

    @property
    def dns(self) -> bool:
        return Service.DNS in self.l3.services


def nic_inside(l3: L3Spec, nic: NicSpec) -> bool:
    """Whether the NIC's address is an IPv4 address inside its L3: a NIC that is not is served nowhere."""
    try:
        return ipaddress.IPv4Address(nic.ip) in l3.network
    except ValueError:
        return False


def _dhcp_address(l3: L3Spec, l2s: dict[str, L2Spec]) -> str | None:
    """The L3's DHCP address when the L3 can be served here, else None (logged when it is a mistake)."""
    fields = {"l3": l3.uuid, "dhcp_address": l3.dhcp_address, "cidr": l3.cidr}
    if Service.DHCP not in l3.services:
        return None
    address = l3.dhcp_address
    try:
        inside = address is not None and ipaddress.IPv4Address(address) in l3.network
    except ValueError:
        inside = False
    if address is None or not inside:
        log.error("L3 with DHCP but no valid DHCP address in its subnet: not served", extra={"fields": fields})
        return None
    if l3.l2_uuid not in l2s:
        log.warning("L3 whose L2 is unknown here: not served", extra={"fields": fields})
        return None
    return address


def plan(l2s: dict[str, L2Spec], l3s: dict[str, L3Spec], vms: dict[str, VmSpec],
         dns: dict[str, DnsRecord]) -> dict[str, ServedL3]:
    """L3 uuid -> ServedL3 for every L3 this host must serve (inputs keyed by uuid or stream key)."""
    nics: dict[str, list[tuple[VmSpec, NicSpec]]] = defaultdict(list)
    for vm in sorted(vms.values(), key=lambda v: v.uuid):
        for nic in vm.nics:
            nics[nic.l3_uuid].append((vm, nic))
    records: dict[str, list[DnsRecord]] = defaultdict(list)
    for rec in sorted(dns.values(), key=lambda r: (r.name, r.ip)):
        records[rec.l3_uuid].append(rec)
    by_uuid = {l3.uuid: l3 for l3 in l3s.values()}
    l2_by_uuid = {l2.uuid: l2 for l2 in l2s.values()}
    out = {}
    for uuid, l3 in by_uuid.items():
        address = _dhcp_address(l3, l2_by_uuid) if nics.get(uuid) else None
        if address is not None:
            out[uuid] = ServedL3(l3, l2_by_uuid[l3.l2_uuid], valid_nics(l3, nics[uuid]), tuple(records.get(uuid, ())),
                                 address)
    return out


def valid_nics(l3: L3Spec, nics: Iterable[tuple[VmSpec, NicSpec]]) -> tuple[tuple[VmSpec, NicSpec], ...]:
    """The NICs whose address can be served (one bad NIC must not take its L3's namespace down with it)."""
    nics = tuple(nics)
    for vm, nic in nics:
        if not nic_inside(l3, nic):
            log.error("NIC address invalid or outside its L3, not served", extra={"fields": {
                "vm": vm.uuid, "nic": nic.uuid, "mac": nic.mac, "ip": nic.ip, "l3": l3.uuid}})
    return tuple((vm, nic) for vm, nic in nics if nic_inside(l3, nic))
