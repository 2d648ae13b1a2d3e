"""What each reserved MAC address is offered: address plus options, encoded once per change.

Reservations are rebuilt from desired state whenever it changes, so the DHCP hot path only looks a
MAC up and copies a pre-encoded option block into the reply.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from agentkit.addr import METADATA_ADDRESS
from agentkit.model import L3Spec, NicSpec, Service, VmSpec
from flatnet.dhcp import codec as c
from flatnet.hostname import domain_name, hostname
from flatnet.plan import valid_nics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reservation:
    """One NIC's lease: `options` go into OFFER/ACK, `inform_options` (no lease time) into ACK to INFORM."""

    mac: bytes
    ip: bytes
    options: bytes
    inform_options: bytes
    vm_uuid: str = ""
    nic_uuid: str = ""


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def dns_servers(l3: L3Spec) -> list[str]:
    """Our DNS server when the L3 offers DNS (it forwards to the L3's servers), else those servers."""
    return [l3.dhcp_address] if Service.DNS in l3.services and l3.dhcp_address else list(l3.dns_servers)


def _l3_options(l3: L3Spec, server: str, default: bool) -> list[tuple[int, bytes]]:
    """Options shared by every NIC of the L3; router, DNS, domain and routes only on the default NIC."""
    net = l3.network
    items = [
        (c.OPT_SUBNET_MASK, net.netmask.packed),
        (c.OPT_BROADCAST, net.broadcast_address.packed),
        (c.OPT_MTU, c.u16(l3.mtu)),
    ]
    if not default:
        return items
    routes = [(f"{METADATA_ADDRESS}/32", server)]
    if l3.gateway:
        items.append((c.OPT_ROUTER, c.ip_bytes(l3.gateway)))
        routes.append(("0.0.0.0/0", l3.gateway))  # RFC 3442: with option 121 the client ignores option 3
    servers = dns_servers(l3)
    if servers:
        items.append((c.OPT_DNS, c.ip_list(servers)))
    if l3.domain:
        items.append((c.OPT_DOMAIN, domain_name(l3.domain).encode()))
    items.append((c.OPT_CLASSLESS_ROUTES, c.classless_routes(routes)))
    return items


def _reservation(l3: L3Spec, server: str, vm: VmSpec, nic: NicSpec, lease_time: int) -> Reservation:
    head = [(c.OPT_SERVER_ID, c.ip_bytes(server))]
    tail = [*_l3_options(l3, server, nic.default), (c.OPT_HOSTNAME, hostname(vm.name).encode())]
    return Reservation(
        mac=mac_bytes(nic.mac),
        ip=c.ip_bytes(nic.ip),
        options=c.encode_options([*head, (c.OPT_LEASE_TIME, c.u32(lease_time)), *tail]),
        inform_options=c.encode_options([*head, *tail]),
        vm_uuid=vm.uuid,
        nic_uuid=nic.uuid,
    )


def reservations(l3: L3Spec, nics: Iterable[tuple[VmSpec, NicSpec]], lease_time: int) -> dict[bytes, Reservation]:
    """MAC -> Reservation for the NICs of `l3`; invalid NICs and MACs claimed twice are left out (logged)."""
    server = l3.dhcp_address
    if server is None:  # `plan` serves only L3s with a DHCP address
        return {}
    out: dict[bytes, Reservation] = {}
    claimed: Counter[bytes] = Counter()
    for vm, nic in valid_nics(l3, nics):
        r = _reservation(l3, server, vm, nic, lease_time)
        claimed[r.mac] += 1
        out[r.mac] = r
    for mac, n in claimed.items():
        if n > 1:
            log.error("MAC claimed by %d NICs of one L3, not served", n, extra={"fields": {"mac": mac.hex(":")}})
            del out[mac]
    return out
