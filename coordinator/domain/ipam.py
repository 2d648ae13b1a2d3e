"""IP address management by etcd compare-and-swap: an address is taken by creating its key.

Two replicas racing for one address cannot both win: each claim is `create_revision == 0` on
`/hs/ipam/<l3>/<ip>` inside the same transaction as the object that uses it.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Set
from typing import Any

from agentkit.errors import Invalid
from agentkit.model import L3Spec
from coordinator.domain.errors import IpExhausted, IpInUse
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn

MAX_TRIES = 64


def pool(l3: L3Spec) -> list[tuple[int, int]]:
    """Allocatable address ranges as inclusive integer pairs (the whole subnet's hosts if none)."""
    net = l3.network
    if l3.ip_ranges:
        return [(int(ipaddress.IPv4Address(r.start)), int(ipaddress.IPv4Address(r.end))) for r in l3.ip_ranges]
    return [(int(net.network_address) + 1, int(net.broadcast_address) - 1)]


def reserved(l3: L3Spec) -> set[str]:
    return {a for a in (l3.gateway, l3.dhcp_address) if a}


async def taken(store: Store, l3_uuid: str) -> set[str]:
    entries, _ = await store.list(keys.ipam_prefix(l3_uuid), keys_only=True)
    return {e.key.rsplit("/", 1)[1] for e in entries}


def pick(l3: L3Spec, used: Set[str], avoid: Set[str] = frozenset()) -> str:
    """A free address, random so that concurrent allocators rarely collide; `IpExhausted` when none is left."""
    blocked = used | reserved(l3) | avoid
    ranges = pool(l3)
    size = sum(hi - lo + 1 for lo, hi in ranges)
    for _ in range(MAX_TRIES if size > len(blocked) else 0):
        lo, hi = random.choices(ranges, weights=[h - lo_ + 1 for lo_, h in ranges])[0]
        ip = str(ipaddress.IPv4Address(random.randint(lo, hi)))
        if ip not in blocked:
            return ip
    for lo, hi in ranges:
        for n in range(lo, hi + 1):
            ip = str(ipaddress.IPv4Address(n))
            if ip not in blocked:
                return ip
    raise IpExhausted(name=l3.name, uuid=l3.uuid)


def check_fixed(l3: L3Spec, ip: str, field: str) -> None:
    """A requested address must lie in the L3's ranges and not be a reserved one."""
    try:
        addr = int(ipaddress.IPv4Address(ip))
    except ValueError:
        raise Invalid(f"{ip!r} is not an IPv4 address", field=field) from None
    if not any(lo <= addr <= hi for lo, hi in pool(l3)):
        raise Invalid(f"{ip} is outside the IP ranges of L3 network {l3.name}", field=field)
    if ip in reserved(l3):
        raise IpInUse(f"{ip} is the gateway or DHCP address of {l3.name}", field=field)


def claim(txn: Txn, l3_uuid: str, ip: str, owner: dict[str, Any]) -> Txn:
    key = keys.ipam(l3_uuid, ip)
    return txn.absent(key).put(key, owner)


def release(txn: Txn, l3_uuid: str, ip: str) -> Txn:
    return txn.delete(keys.ipam(l3_uuid, ip))

