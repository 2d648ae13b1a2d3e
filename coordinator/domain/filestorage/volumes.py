"""Volumes on LocalStorage and SharedMountPoint: create (blank, or a qcow2 overlay on a cached image),
resize (grow), snapshots by name (take, revert to, delete), delete; each as one transaction that writes
the record, the host's desired item and the capacity reservation together.

The host that works on a volume gets `record.spec()`; deleting leaves `deleted: true` there until the
host reports the files gone (`forget`), so a host that was down deletes them when it returns.
Reverting or merging a snapshot rewrites files, so the volume's VM must be stopped first (409).
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import Field

from agentkit import units
from agentkit.errors import InUse, Invalid, NotFound
from agentkit.model import Revert, StoredVolumeSpec, VmSpec, VolumeDisk
from coordinator.domain import hosts, vmrecords
from coordinator.domain.errors import Exists, InvalidState, MissingReference
from coordinator.domain.filestorage import capacity, images, placement
from coordinator.domain.filestorage.records import (
    FileSnapshotRecord,
    FileStorageRecord,
    FileVolumeRecord,
    load_storage,
    load_volume,
    write,
)
from coordinator.domain.images.records import MediaType
from coordinator.etcd import keys
from coordinator.etcd.cas import retry_cas
from coordinator.etcd.store import Entry, Store, Txn

Mutate = Callable[[FileVolumeRecord, Txn], Awaitable[None]]


class FileVolumeView(FileVolumeRecord):
    disk: VolumeDisk = Field(description="how a VM attaches it (POST /v1/vms/{uuid}/volumes with volume_uuid)")
    image_uuid: str | None = None
    status: str = Field(description="Creating, Ready, Error or Deleted, as its host reports it (Creating until "
                        "then)")
    observed: dict[str, Any] | None = Field(None, description="its host's last report: path, used bytes, error...")
    progress: dict[str, Any] | None = Field(None, description="a migration in progress as its target reports it: "
                                            "state (Waiting, Copying, Verified, Error), done and total bytes, "
                                            "percent, error")


async def observed_of(store: Store, kind: str, uuid: str) -> dict[str, Any] | None:
    entry = await store.get(keys.observed(kind, uuid))
    return entry.value if entry is not None and isinstance(entry.value, dict) else None


async def view(store: Store, rec: FileVolumeRecord) -> FileVolumeView:
    obs = await observed_of(store, "volume", rec.uuid)
    progress = None
    if rec.migration is not None:
        moving = await observed_of(store, "migration", rec.uuid)
        if moving is None or moving.get("id") != rec.migration.id:
            moving = {"state": "Waiting"}
        done, total = int(moving.get("done") or 0), int(moving.get("total") or 0)
        progress = {"state": moving.get("state"), "done": done, "total": total, "error": moving.get("error"),
                    "percent": round(100 * done / total, 1) if total else 0.0}
    return FileVolumeView(**rec.model_dump(), disk=rec.volume_disk(), image_uuid=rec.image.uuid if rec.image else None,
                          status=str(obs.get("state", "Creating")) if obs else "Creating", observed=obs,
                          progress=progress)


async def create(store: Store, name: str, ps: FileStorageRecord, image_uuid: str | None, size: int | None,
                 host_ref: str | None, heartbeat_timeout: float, kind: Literal["Root", "Data"] | None = None
                 ) -> FileVolumeRecord:
    """A data volume (blank, or from a DataVolumeTemplate) or a root volume (from a RootVolumeTemplate); `kind`
    is the volume's type (default: Root from an image, Data without)."""
    image = None
    kind = kind or ("Root" if image_uuid else "Data")
    if image_uuid:
        media: MediaType = "RootVolumeTemplate" if kind == "Root" else "DataVolumeTemplate"
        image = await images.image(store, image_uuid, (media,), "image_uuid")
    elif size is None or kind == "Root":
        raise Invalid("size is required for a blank data volume (a root volume needs image_uuid)", field="size")
    want = max(size or 0, image.virtual_size if image else 0)
    uuid = uuidlib.uuid4().hex

    async def attempt(_: int) -> FileVolumeRecord | None:
        placed, scope = await placement.place(store, ps, want, host_ref, heartbeat_timeout)
        host = placed.hosts[0]
        rec = FileVolumeRecord(uuid=uuid, name=name, primary_storage_uuid=ps.uuid, host_uuid=host, size=want,
                           type=kind,
                           image=image.ref if image else None, created_at=time.time())
        txn = Txn().exists(keys.file_storage(ps.uuid))  # not on a storage deleted since it was read (any replica)
        write(txn, rec, None)
        scope.reserve(txn, want)
        if await store.commit(txn) is not None:
            return rec
        if await store.get(keys.file_storage(ps.uuid)) is None:
            raise MissingReference(what="primary storage", ident=ps.name, field="primary_storage_uuid")
        return None
    return await retry_cas(attempt, f"the capacity of primary storage {ps.name}")


async def not_migrating(store: Store, rec: FileVolumeRecord, what: str) -> None:
    """InvalidState while the volume moves to another host (its files must not change meanwhile)."""
    if rec.migration is not None:
        target = await hosts.title_of(store, rec.migration.target)
        raise InvalidState(f"volume {rec.name} is migrating to {target}: {what} once it is there")


async def update(store: Store, uuid: str, mutate: Mutate) -> FileVolumeRecord:
    """`mutate` the record (it may add guarded ops to the transaction) and stream it, atomically; refused
    while the volume migrates."""
    async def attempt(_: int) -> FileVolumeRecord | None:
        rec, entry = await load_volume(store, uuid)
        await not_migrating(store, rec, "change it")
        txn = Txn()
        await mutate(rec, txn)
        write(txn, rec, entry)
        return rec if await store.commit(txn) is not None else None
    return await retry_cas(attempt, f"volume {uuid}")


async def resize(store: Store, uuid: str, size: int) -> FileVolumeRecord:
    """Grow a volume (live when its VM runs); the added bytes are reserved."""
    async def grow(rec: FileVolumeRecord, txn: Txn) -> None:
        if size < rec.size:
            raise Invalid(f"volume {rec.name} is {units.binary(rec.size)} ({rec.size} bytes), more than the "
                          f"{units.binary(size)} asked: qcow2 volumes only grow", field="size")
        ps, _ = await load_storage(store, rec.primary_storage_uuid)
        host = await hosts.load(store, rec.host_uuid)
        scope = await capacity.scope(store, ps, rec.host_uuid, host.name)
        scope.admit(size - rec.size, await capacity.ratio(store))
        scope.reserve(txn, size - rec.size)
        rec.size = size
    return await update(store, uuid, grow)


async def snapshot(store: Store, uuid: str, name: str) -> FileVolumeRecord:
    """Take a snapshot (live when its VM runs: qemu switches to a new overlay)."""
    async def take(rec: FileVolumeRecord, txn: Txn) -> None:
        if any(s.name == name for s in rec.snapshots):
            raise Exists(f"volume {rec.name} has a snapshot {name}", field="name")
        rec.seq += 1
        rec.snapshots.append(FileSnapshotRecord(name=name, uuid=uuidlib.uuid4().hex, seq=rec.seq,
                                                created_at=time.time()))
    return await update(store, uuid, take)


def named(rec: FileVolumeRecord, name: str) -> FileSnapshotRecord:
    found = next((s for s in rec.snapshots if s.name == name), None)
    if found is None:
        raise NotFound(f"volume {rec.name} has no snapshot {name}", field="snapshot")
    return found


async def stopped(store: Store, rec: FileVolumeRecord, what: str) -> None:
    """InvalidState unless the volume's VM (if any) is desired and reported stopped."""
    if rec.vm_uuid is None:
        return
    try:
        host, spec, _ = await vmrecords.load(store, rec.vm_uuid)
    except NotFound:
        return
    await vm_stopped(store, rec.name, spec, what)


async def vm_stopped(store: Store, volume: str, spec: VmSpec, what: str) -> None:
    """InvalidState unless VM `spec`, which uses `volume`, is desired and reported stopped: `what` rewrites the
    volume's data, which a running guest would find changed under it (Ceph volumes follow the same rule)."""
    obs = await store.get(keys.observed("vm", spec.uuid))
    state = obs.value.get("state") if obs is not None and isinstance(obs.value, dict) else None
    if spec.state != "Stopped" or state not in (None, "Stopped", "Crashed"):
        raise InvalidState(f"volume {volume} belongs to VM {spec.name}, which is {state or spec.state}: stop it "
                           f"first to {what}")


async def rollback(store: Store, uuid: str, name: str) -> FileVolumeRecord:
    """Revert a volume to a snapshot (its VM stopped): what was written since is discarded."""
    async def revert(rec: FileVolumeRecord, txn: Txn) -> None:
        snap = named(rec, name)
        await stopped(store, rec, f"revert it to snapshot {name}")
        rec.seq += 1
        rec.revert = Revert(seq=rec.seq, snapshot_uuid=snap.uuid)
    return await update(store, uuid, revert)


async def delete_snapshot(store: Store, uuid: str, name: str) -> FileVolumeRecord:
    """Delete a snapshot: its data is merged into what depends on it (its VM stopped)."""
    async def drop(rec: FileVolumeRecord, txn: Txn) -> None:
        snap = named(rec, name)
        await stopped(store, rec, f"delete snapshot {name}")
        rec.snapshots.remove(snap)
    return await update(store, uuid, drop)


async def release(store: Store, txn: Txn, rec: FileVolumeRecord, entry: Entry) -> None:
    """Delete the volume in `txn`: record gone with its host's reports on it and on its copy (those its host
    sends after this are not stored: observed.py), tombstone streamed, its bytes returned."""
    ps, _ = await load_storage(store, rec.primary_storage_uuid)
    scope = await capacity.scope(store, ps, rec.host_uuid, rec.host_uuid, sized=False)
    write(txn, rec, entry, deleted=True)
    txn.delete(keys.observed("volume", rec.uuid)).delete(keys.observed("migration", rec.uuid))
    scope.reserve(txn, -rec.size)


async def delete(store: Store, uuid: str) -> FileVolumeRecord:
    """Delete a volume no VM uses; its bytes are returned at once, its files go when its host gets to it."""
    async def attempt(_: int) -> FileVolumeRecord | None:
        rec, entry = await load_volume(store, uuid)
        if rec.vm_uuid is not None:
            raise InUse(f"volume {rec.name} is attached to {await vmrecords.title_of(store, rec.vm_uuid)}; detach "
                        "it or destroy the VM first")
        await not_migrating(store, rec, "delete it")
        txn = Txn()
        await release(store, txn, rec, entry)
        return rec if await store.commit(txn) is not None else None
    return await retry_cas(attempt, f"volume {uuid}")


async def forget(store: Store, host: str, uuid: str) -> None:
    """The host reports a deleted volume's files gone: its tombstone leaves the host's stream."""
    key = keys.desired_for(host, f"volume/{uuid}")
    entry = await store.get(key)
    if entry is not None and StoredVolumeSpec.model_validate(entry.value).deleted:
        await store.commit(Txn().unchanged(key, entry.mod_revision).delete(key))

