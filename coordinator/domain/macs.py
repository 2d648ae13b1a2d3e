"""MAC addresses, unique on every L2 network: a NIC's MAC is taken by creating `/hs/mac/<l2>/<mac>` in the
transaction that creates the NIC (as `ipam` takes addresses), so no two NICs that share an L2 (through any
of its L3s, on any host) ever share a MAC.

A random MAC (`fa:16:3e` and 24 random bits) is drawn again while it is taken; a fixed MAC that is taken
is refused (409 `mac_in_use`, field `fixed_macs`, or `mac` for a NIC attached later), as is a multicast or
all-zero one. NICs created before this index
existed are not in it.
"""

from __future__ import annotations

import random
from collections.abc import Set
from typing import Any

from agentkit.errors import Invalid
from coordinator.domain.errors import MacInUse
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn

RANDOM_PREFIX = "fa:16:3e:"
MAX_TRIES = 16


def random_mac() -> str:
    return RANDOM_PREFIX + ":".join(f"{b:02x}" for b in random.randbytes(3))


async def pick(store: Store, l2_uuid: str, fixed: str | None, fresh: bool, avoid: Set[str] = frozenset(),
               field: str = "fixed_macs") -> str:
    """The fixed MAC (checked) or a free random one; errors name `field`, the request's field that asked for it.
    On a first try (`fresh` false) nothing is read: the claim's compare catches a collision and the retry reads."""
    if fixed is not None:
        if int(fixed[:2], 16) & 1 or fixed == "00:00:00:00:00:00":
            raise Invalid(f"{fixed} is a multicast or all-zero address; a NIC needs a unicast one", field=field)
        if fixed in avoid or (fresh and await store.get(keys.mac(l2_uuid, fixed))):
            raise MacInUse(mac=fixed, l2=l2_uuid, field=field)
        return fixed
    for _ in range(MAX_TRIES):
        mac = random_mac()
        if mac not in avoid and not (fresh and await store.get(keys.mac(l2_uuid, mac))):
            return mac
    raise MacInUse(f"no free random MAC found on L2 {l2_uuid} in {MAX_TRIES} draws", field=field)


def claim(txn: Txn, l2_uuid: str, mac: str, owner: dict[str, Any]) -> Txn:
    key = keys.mac(l2_uuid, mac)
    return txn.absent(key).put(key, owner)


async def release(store: Store, txn: Txn, l2_uuid: str, mac: str, nic_uuid: str) -> None:
    """Give the MAC back in `txn` if this NIC holds it (a NIC from before the index holds nothing)."""
    entry = await store.get(keys.mac(l2_uuid, mac))
    if entry is not None and isinstance(entry.value, dict) and entry.value.get("nic") == nic_uuid:
        txn.unchanged(entry.key, entry.mod_revision).delete(entry.key)
