"""IP address management by etcd compare-and-swap: an address is taken by creating its key.

Two replicas racing for one address cannot both win: each claim is `create_revision == 0` on
`/hs/ipam/<l3>/<ip>` inside the same transaction as the object that uses it. VMs get addresses by next
fit from where the replica last stopped (`next_free`, hints in coordinator/etcd/hints.py), so a batch
gets neighbours and replicas rarely meet; EIPs pick at random (`pick`).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator, Set
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
        ip = str(ipaddress.IPv4Address(_anywhere(ranges)))
        if ip not in blocked:
            return ip
    for lo, hi in ranges:
        for n in range(lo, hi + 1):
            ip = str(ipaddress.IPv4Address(n))
            if ip not in blocked:
                return ip
    raise IpExhausted(name=l3.name, uuid=l3.uuid)


def next_free(l3: L3Spec, start: int | None, *used: Set[str]) -> tuple[str, int]:
    """Next fit: the first address at or after `start` (None: a random one) that is in none of `used` nor
    reserved, wrapping around the ranges; and where the next search starts. An allocator that keeps its
    place hands out neighbours, and two that start apart rarely meet. `IpExhausted` when none is left."""
    ranges = pool(l3)
    blocked = reserved(l3)
    for n in _walk(ranges, _anywhere(ranges) if start is None else start):
        ip = str(ipaddress.IPv4Address(n))
        if ip not in blocked and not any(ip in u for u in used):
            return ip, n + 1
    raise IpExhausted(name=l3.name, uuid=l3.uuid)


def _anywhere(ranges: list[tuple[int, int]]) -> int:
    """A random address of the ranges, each address as likely."""
    lo, hi = random.choices(ranges, weights=[h - lo_ + 1 for lo_, h in ranges])[0]
    return random.randint(lo, hi)


def _walk(ranges: list[tuple[int, int]], start: int) -> Iterator[int]:
    """Every address of the ranges once, from `start` (or the first range's first, if outside them) on."""
    i = next((k for k, (lo, hi) in enumerate(ranges) if lo <= start <= hi), None)
    if i is None:
        i, start = 0, ranges[0][0]
    lo, hi = ranges[i]
    yield from range(start, hi + 1)
    for lo_, hi_ in ranges[i + 1:] + ranges[:i]:
        yield from range(lo_, hi_ + 1)
    yield from range(lo, start)


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

