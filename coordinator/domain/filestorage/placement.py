"""Which host takes a VM (or a volume) on file-based primary storage: one attached to the storage, where
its agent reports it usable (a shared mount point mounted), and where the bytes (and a VM's memory,
hostmemory.py) asked for fit; among those the connected one with the fewest VMs (ties: the smallest uuid, so
replicas agree).
"""

from __future__ import annotations

import time

from coordinator.domain import hostmemory, hosts, placement
from coordinator.domain.errors import InsufficientCapacity, NoHost, StorageUnusable
from coordinator.domain.filestorage import capacity
from coordinator.domain.filestorage.capacity import Scope
from coordinator.domain.filestorage.records import FileStorageRecord
from coordinator.domain.hosts import Host
from coordinator.domain.placement import Placed
from coordinator.etcd import keys
from coordinator.etcd.store import Store


async def usable(store: Store, ps: FileStorageRecord, host: Host) -> None:
    """StorageUnusable unless `host` is attached to `ps` and its agent reports it Ready."""
    if not ps.attached(host.uuid):
        raise StorageUnusable(f"primary storage {ps.name} is not attached to host {host.name}", field="host_uuid")
    body = await capacity.report(store, ps.uuid, host.uuid)
    if body is None or body.get("state") != "Ready":
        why = (body or {}).get("error") or "its agent has not reported it yet"
        raise StorageUnusable(f"primary storage {ps.name} is not usable on host {host.name}: {why}",
                              field="host_uuid")


async def fit(store: Store, ps: FileStorageRecord, host: Host, need: int, ratio: float) -> Scope:
    await usable(store, ps, host)
    where = await capacity.scope(store, ps, host.uuid, host.name)
    where.admit(need, ratio)
    return where


async def place(store: Store, ps: FileStorageRecord, need: int, requested: str | None,
                heartbeat_timeout: float, memory_mb: int = 0) -> tuple[Placed, Scope]:
    """The host for `need` more bytes on `ps` and a VM holding `memory_mb` (the one `requested`, or the best
    connected one; its memory to claim where the VM is made) and the capacity scope to reserve the bytes in."""
    ratio = await capacity.ratio(store)
    if requested:
        placed = await placement.place_many(store, requested, heartbeat_timeout, 1, memory_mb)
        return placed, await fit(store, ps, await hosts.load(store, placed.hosts[0]), need, ratio)
    snap, _ = await store.snapshot([keys.HOSTS, keys.ALIVE])
    up = hosts.connected(snap[keys.ALIVE], heartbeat_timeout, time.time())
    found, read = placement.records(snap[keys.HOSTS])
    candidates = [h for h in found if h.kind == "kvm" and h.uuid in up and ps.attached(h.uuid)]
    if not candidates:
        raise NoHost(f"no connected KVM host is attached to primary storage {ps.name}", field="host_uuid")
    counts = await placement.vm_counts(store, candidates)
    refusals: list[StorageUnusable | InsufficientCapacity] = []
    for host in sorted(candidates, key=lambda h: (counts[h.uuid], h.uuid)):
        try:
            memory = await hostmemory.admitted(store, host, memory_mb)
            placed = Placed([host.uuid], [memory] if memory else [], {host.uuid: read[host.uuid]})  # guarded
            return placed, await fit(store, ps, host, need, ratio)
        except (StorageUnusable, InsufficientCapacity) as e:
            refusals.append(e)
    full = [e for e in refusals if isinstance(e, InsufficientCapacity)]
    if full:
        raise full[0]
    raise StorageUnusable("; ".join(e.message for e in refusals), field="primary_storage_uuid")
