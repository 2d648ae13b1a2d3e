"""Capacity of file-based primary storage: virtual bytes reserved in etcd transactions, thin, over-provisioned.

Each scope (a LocalStorage on one host, or a SharedMountPoint as a whole) keeps what its volumes
reserved at `/hs/psreserved/<storage>/<scope>`. A new volume (or a larger size) is admitted when

    reserved + asked <= total x mevoco.overProvisioning.primaryStorage   (default 1.0)

where `total` is the filesystem's size as the scope's hosts report it; the reservation is written in
the volume's own transaction, guarded on the reservation record, so two replicas can never both
promise the last bytes. Deleting a volume returns its bytes in its deletion's transaction. Volumes are
thin: a reservation is what they may grow to, not what they use (the reports show that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentkit import units
from coordinator.domain import configs
from coordinator.domain.errors import InsufficientCapacity, StorageUnusable
from coordinator.domain.filestorage.records import SHARED_SCOPE, FileStorageRecord
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store, Txn

MiB = 1 << 20


@dataclass(frozen=True)
class Scope:
    storage: FileStorageRecord
    scope: str  # a host uuid (LocalStorage) or `shared`
    where: str  # how messages name it: `on host kvm1`, or `` for shared storage
    total: int  # physical bytes, as the hosts report them
    reserved: int
    entry: Entry | None  # the reservation record, guarded by whoever changes it

    def limit(self, ratio: float) -> int:
        return int(self.total * ratio)

    def admit(self, asked: int, ratio: float) -> None:
        """InsufficientCapacity (409) naming the storage and the figures unless `asked` more bytes fit."""
        if asked <= 0 or self.reserved + asked <= self.limit(ratio):
            return
        left = max(self.limit(ratio) - self.reserved, 0)
        raise InsufficientCapacity(
            f"primary storage {self.storage.name}{self.where} cannot take {units.binary(asked)} ({asked} bytes): "
            f"{units.binary(left)} ({left} bytes) of {units.binary(self.limit(ratio))} left (capacity {self.total} "
            f"bytes x over-provisioning {ratio:g}, {self.reserved} bytes reserved)", field="size")

    def reserve(self, txn: Txn, delta: int) -> None:
        """Add `delta` bytes (negative: return them) to the reservation, guarded on it."""
        key = keys.reserved(self.storage.uuid, self.scope)
        if self.entry is None:
            txn.absent(key)
        else:
            txn.unchanged(key, self.entry.mod_revision)
        txn.put(key, {"bytes": max(self.reserved + delta, 0)})


def reserved_of(value: object) -> int:
    n = value.get("bytes") if isinstance(value, dict) else None
    return n if isinstance(n, int) else 0


async def report(store: Store, storage_uuid: str, host_uuid: str) -> dict[str, Any] | None:
    """What a host last reported about a storage (state, error, capacity, peers)."""
    entry = await store.get(keys.observed("storage", f"{storage_uuid}.{host_uuid}"))
    return entry.value if entry is not None and isinstance(entry.value, dict) else None


async def reports(store: Store, storage_uuid: str) -> dict[str, dict[str, Any]]:
    """host uuid -> its last report about the storage."""
    entries, _ = await store.list(keys.observed("storage", f"{storage_uuid}."))
    return {e.key.rsplit(".", 1)[1]: e.value for e in entries if isinstance(e.value, dict)}


def total_of(body: dict[str, Any] | None) -> int | None:
    cap = body.get("capacity") if body else None
    total = cap.get("total") if isinstance(cap, dict) else None
    return total if isinstance(total, int) else None


async def scope(store: Store, ps: FileStorageRecord, host_uuid: str, host_name: str, sized: bool = True) -> Scope:
    """The capacity scope a volume of `ps` on `host_uuid` counts in. With `sized` (to admit more bytes)
    StorageUnusable while no host of it has reported the storage's size yet; returning bytes needs none."""
    name = ps.scope(host_uuid)
    if name == SHARED_SCOPE:
        totals = [t for t in map(total_of, (await reports(store, ps.uuid)).values()) if t is not None]
        where, total = "", max(totals, default=None)
    else:
        where, total = f" on host {host_name}", total_of(await report(store, ps.uuid, host_uuid))
    if total is None and sized:
        raise StorageUnusable(f"primary storage {ps.name}{where} has not reported its capacity yet (its hosts' "
                              "agents do within seconds of it being attached); retry")
    entry = await store.get(keys.reserved(ps.uuid, name))
    return Scope(ps, name, where, total or 0, reserved_of(entry.value) if entry else 0, entry)


async def ratio(store: Store) -> float:
    return await configs.number(store, configs.OVER_PROVISIONING)
