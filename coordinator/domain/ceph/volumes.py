"""Volumes on Ceph primary storage: root volumes cloned copy-on-write from an image, empty data
volumes, resize, flatten, snapshots, delete; each one carries the RbdDisk a VM attaches.

A volume is recorded (status Creating) before the agent makes it and removed again if that fails, so
an interrupted create stays visible and deletable. Root volumes need the image's backup storage and
the primary storage to be one Ceph cluster: a clone never copies data (the seeds' rule).
"""

from __future__ import annotations

import contextlib
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from typing import Literal

from agentkit import units
from agentkit.errors import HostStackError, Invalid
from agentkit.model import RbdDisk, VmSpec
from cephagent.client import CephAgentClient
from cephagent.wire import IMAGE_SNAPSHOT, SECTOR, ParentSpec, VolumeInfo
from coordinator.domain.ceph import imagecache
from coordinator.domain.ceph.agents import Agents
from coordinator.domain.ceph.errors import (
    AgentFailed,
    ClusterMismatch,
    HasDependants,
    ImageNotReady,
    InUse,
    SnapshotProtected,
    VolumeNotReady,
)
from coordinator.domain.ceph.records import (
    SnapshotRecord,
    StorageRecord,
    VolumeRecord,
    load_storage,
    load_storages,
    load_volume,
    load_volumes,
)
from coordinator.domain.ceph.views import VolumeView
from coordinator.domain.errors import MissingReference
from coordinator.domain.filestorage.volumes import vm_stopped
from coordinator.domain.images.records import load_image
from coordinator.etcd import keys
from coordinator.etcd.cas import retry_cas
from coordinator.etcd.store import Store, Txn
from coordinator.settings import CoordinatorSettings

Op = Callable[[CephAgentClient, VolumeRecord], Awaitable[VolumeInfo]]
VolumeType = Literal["Root", "Data"]
TEMPLATES: dict[VolumeType, str] = {"Root": "RootVolumeTemplate", "Data": "DataVolumeTemplate"}
Mutate = Callable[[VolumeRecord, VolumeInfo], None]


async def dependants(store: Store, specs: list[str]) -> list[str]:
    """Volume names for RBD specs `pool/image` (the spec itself when no volume record matches)."""
    names = {v.spec: v.name for v in await load_volumes(store)}
    return sorted(names.get(s, s) for s in specs)


async def _source(store: Store, settings: CoordinatorSettings, agents: Agents, ps: StorageRecord, image_uuid: str,
                  kind: VolumeType) -> ParentSpec:
    """The snapshot to clone from: a Ceph backup storage's image in the primary storage's cluster, or the
    copy of an image store's image in the primary storage's image-cache pool (made on first use)."""
    image, _ = await load_image(store, image_uuid, field="image_uuid")
    if image.status != "Ready":
        raise ImageNotReady(f"image {image.name} is {image.status}" + (f" ({image.reason})" if image.reason else ""),
                            field="image_uuid")
    wanted = TEMPLATES[kind]
    if image.media_type not in (None, wanted):
        raise Invalid(f"image {image.name} is a {image.media_type}; a {kind.lower()} volume comes from a {wanted}",
                      field="image_uuid")
    if image.backup_storage_type == "ImageStore":
        return await imagecache.ensure(store, settings, agents, ps, image)
    if image.fsid != ps.fsid:
        raise ClusterMismatch(f"Ceph backup storage works only with Ceph primary storage in the same cluster: image "
                              f"{image.name} is in Ceph cluster {image.fsid}, primary storage {ps.name} in {ps.fsid}",
                              field="image_uuid")
    pool, rbd_image = image.rbd
    return ParentSpec(pool=pool, image=rbd_image, snapshot=IMAGE_SNAPSHOT)


def _whole_sectors(size: int | None) -> None:
    """The agent's rule (cephagent.wire.Size) checked before a record is written or an agent asked."""
    if size is not None and size % SECTOR:
        raise Invalid(f"size {size} is not a multiple of {SECTOR} bytes (a disk is whole sectors)", field="size")


async def create(store: Store, settings: CoordinatorSettings, name: str, ps_ref: str, image_uuid: str | None,
                 size: int | None, kind: VolumeType | None = None) -> VolumeView:
    """A volume cloned from an image (root by default; a data volume from a DataVolumeTemplate), grown to
    `size`, or an empty data volume of `size` bytes."""
    _whole_sectors(size)
    ps, _ = await load_storage(store, "ps", ps_ref, field="primary_storage_uuid")
    kind = kind or ("Root" if image_uuid else "Data")
    if image_uuid is None and (kind == "Root" or size is None):
        raise Invalid("a root volume comes from an image (give image_uuid)" if kind == "Root" else
                      "size is required for a data volume (or give image_uuid)",
                      field="image_uuid" if kind == "Root" else "size")
    uuid = uuidlib.uuid4().hex
    async with Agents(settings, store=store) as agents:
        source = await _source(store, settings, agents, ps, image_uuid, kind) if image_uuid else None
        vol = VolumeRecord(uuid=uuid, name=name, primary_storage_uuid=ps.uuid, type=kind, image_uuid=image_uuid,
                           pool=ps.pools["rootVolume" if kind == "Root" else "dataVolume"], rbd_image=f"vol-{uuid}",
                           size=size or 0, fsid=ps.fsid, status="Creating", created_at=time.time())
        key = keys.volume(uuid)  # not on a storage deleted since it was read (on any replica): 400 as for none
        rev = await store.commit(Txn().exists(keys.ceph_storage("ps", ps.uuid)).absent(key).put(key, vol.model_dump()))
        if rev is None:
            raise MissingReference(what="primary storage", ident=ps_ref, field="primary_storage_uuid")
        try:
            if source:
                info, _ = await agents.call(ps, lambda c: c.clone(vol.pool, vol.rbd_image, source, size))
            else:
                info, _ = await agents.call(ps, lambda c: c.create_volume(vol.pool, vol.rbd_image, vol.size))
        except BaseException:
            await store.delete(key)
            raise
    vol = vol.model_copy(update={"status": "Ready", "size": info.size})
    await store.commit(Txn().unchanged(key, rev).put(key, vol.model_dump()))
    return VolumeView.of(vol, ps, info)


async def list_all(store: Store, ps_uuid: str | None) -> list[VolumeView]:
    """Every volume (of one primary storage) whose primary storage exists."""
    storages = {s.uuid: s for s in await load_storages(store, "ps")}
    return [VolumeView.of(v, storages[v.primary_storage_uuid]) for v in await load_volumes(store)
            if ps_uuid in (None, v.primary_storage_uuid) and v.primary_storage_uuid in storages]


async def show(store: Store, settings: CoordinatorSettings, uuid: str, live: bool) -> VolumeView:
    """A volume, and (live) its agent's view; an agent's failure is reported in `error`, not raised."""
    vol, _ = await load_volume(store, uuid)
    ps, _ = await load_storage(store, "ps", vol.primary_storage_uuid)
    if not live:
        return VolumeView.of(vol, ps)
    try:
        async with Agents(settings, timeout=10, store=store) as agents:
            info, _ = await agents.call(ps, lambda c: c.volume(vol.pool, vol.rbd_image))
    except HostStackError as e:
        return VolumeView.of(vol, ps, error=e.message)
    return VolumeView.of(vol, ps, info)


async def operate(store: Store, settings: CoordinatorSettings, uuid: str, op: Op, mutate: Mutate) -> VolumeView:
    """Run `op` on the volume's agent, then record what changed with `mutate` (compare-and-swap)."""
    vol, _ = await load_volume(store, uuid)
    if vol.status != "Ready":
        raise VolumeNotReady(name=vol.name, status=vol.status)
    ps, _ = await load_storage(store, "ps", vol.primary_storage_uuid)
    async with Agents(settings, store=store) as agents:
        info, _ = await agents.call(ps, lambda c: op(c, vol))

    async def attempt(_: int) -> VolumeRecord | None:
        current, entry = await load_volume(store, uuid)
        mutate(current, info)
        txn = Txn().unchanged(entry.key, entry.mod_revision).put(entry.key, current.model_dump())
        return current if await store.commit(txn) is not None else None

    return VolumeView.of(await retry_cas(attempt, f"volume {vol.name}"), ps, info)


def sized(vol: VolumeRecord, info: VolumeInfo) -> None:
    vol.size = info.size


async def resize(store: Store, settings: CoordinatorSettings, uuid: str, size: int, allow_shrink: bool) -> VolumeView:
    """Grow a volume; shrinking loses the data past the new end, so it needs `allow_shrink`."""
    _whole_sectors(size)
    vol, _ = await load_volume(store, uuid)
    if size < vol.size and not allow_shrink:
        raise Invalid(f"volume {vol.name} is {units.binary(vol.size)} ({vol.size} bytes); shrinking it to "
                      f"{units.binary(size)} loses data: set allow_shrink to do it anyway", field="size")
    return await operate(store, settings, uuid, lambda c, v: c.resize(v.pool, v.rbd_image, size, allow_shrink), sized)


async def flatten(store: Store, settings: CoordinatorSettings, uuid: str) -> VolumeView:
    """Copy the image's data into the volume: it no longer depends on the image."""
    def mutate(vol: VolumeRecord, info: VolumeInfo) -> None:
        vol.flattened = vol.image_uuid is not None
        sized(vol, info)
    return await operate(store, settings, uuid, lambda c, v: c.flatten(v.pool, v.rbd_image), mutate)


async def snapshot(store: Store, settings: CoordinatorSettings, uuid: str, name: str, protect: bool) -> VolumeView:
    """Snapshot a volume (protected snapshots can only be deleted while nothing is cloned from them)."""
    async def op(c: CephAgentClient, v: VolumeRecord) -> VolumeInfo:
        await c.create_snapshot(v.pool, v.rbd_image, name, protect)
        return await c.volume(v.pool, v.rbd_image)

    def mutate(vol: VolumeRecord, info: VolumeInfo) -> None:
        vol.snapshots = [s for s in vol.snapshots if s.name != name]
        vol.snapshots.append(SnapshotRecord(name=name, protected=protect, created_at=time.time()))
    return await operate(store, settings, uuid, op, mutate)


async def rollback(store: Store, settings: CoordinatorSettings, uuid: str, snap: str) -> VolumeView:
    """Roll a volume back to a snapshot: refused (409) unless every VM that uses it is stopped, as for file
    volumes (the agent refuses too while a client has the image open)."""
    vol, _ = await load_volume(store, uuid)
    for vm in (await _users(store, vol))[0]:
        await vm_stopped(store, vol.name, vm, f"revert it to snapshot {snap}")
    return await operate(store, settings, uuid, lambda c, v: c.rollback(v.pool, v.rbd_image, snap), sized)


async def delete_snapshot(store: Store, settings: CoordinatorSettings, uuid: str, snap: str) -> VolumeView:
    """Delete a snapshot; refused while clones depend on it."""
    async def op(c: CephAgentClient, v: VolumeRecord) -> VolumeInfo:
        await c.delete_snapshot(v.pool, v.rbd_image, snap)
        return await c.volume(v.pool, v.rbd_image)

    def mutate(vol: VolumeRecord, info: VolumeInfo) -> None:
        vol.snapshots = [s for s in vol.snapshots if s.name != snap]
    return await operate(store, settings, uuid, op, mutate)


async def _users(store: Store, vol: VolumeRecord) -> tuple[list[VmSpec], int]:
    """The VMs whose desired state uses this volume's RBD image, and the revision they were read at."""
    entries, read_at = await store.list(keys.DESIRED_HOSTS)
    vms = [VmSpec.model_validate(e.value) for e in entries if "/vm/" in e.key]
    return [vm for vm in vms if any(isinstance(d.disk, RbdDisk) and (d.disk.pool, d.disk.image) ==
                                    (vol.pool, vol.rbd_image) for d in vm.volumes)], read_at


async def guard_use(store: Store, txn: Txn, disk: RbdDisk, field: str) -> None:
    """A VM is to use `disk` (in `txn`): refused (409) while it is a volume's that is being deleted, and held
    while that volume's record is as read, so a delete that marks it meanwhile (on any replica) fails the
    write and its retry sees the mark. An RBD image that is no volume's is the caller's to name."""
    entry = await store.get(keys.volume(disk.image.removeprefix("vol-")))  # volumes' images are vol-<uuid>
    if entry is None:
        return
    vol = VolumeRecord.model_validate(entry.value)
    if (vol.pool, vol.rbd_image) != (disk.pool, disk.image):
        return
    if vol.deleting:
        raise VolumeNotReady(name=vol.name, status="being deleted", field=field)
    txn.unchanged(entry.key, entry.mod_revision)


async def delete(store: Store, settings: CoordinatorSettings, uuid: str) -> None:
    """Delete a volume; refused while a VM uses it, clones depend on it or it has protected snapshots.

    The record is marked first, while no VM uses the volume (one that took it meanwhile, on any replica, fails
    the mark, and the retry names it); VMs are refused it from then on. Then its RBD image goes, then the
    record. A delete that fails clears its mark; one interrupted leaves it, and deleting again goes on."""
    mark = uuidlib.uuid4().hex
    vol = await retry_cas(lambda _: _mark(store, uuid, mark), f"volume {uuid}")
    try:
        ps, _ = await load_storage(store, "ps", vol.primary_storage_uuid)
        async with Agents(settings, store=store) as agents:
            await _delete_image(store, agents, ps, vol)
    except BaseException:
        with contextlib.suppress(HostStackError):  # left marked: deleting again goes on, and clears it if it fails
            await retry_cas(lambda _: _unmark(store, uuid, mark), f"volume {vol.name}")
        raise
    await store.delete(keys.volume(uuid))  # its RBD image is gone: so goes the record, whatever changed meanwhile
    if vol.image_uuid is not None:
        await imagecache.release(store, settings, vol.image_uuid, ps)  # a copy of a deleted image, now unused


async def _mark(store: Store, uuid: str, mark: str) -> VolumeRecord | None:
    """One try at marking the volume as being deleted by `mark`: while no VM's desired state has used it,
    nor changed, since it was read."""
    vol, entry = await load_volume(store, uuid)
    vms, read_at = await _users(store, vol)
    if vms:
        raise InUse(f"volume {vol.name} is attached to VM {', '.join(vm.name for vm in vms)}; detach it or destroy "
                    "the VM first")
    vol.deleting = mark
    txn = Txn().unchanged(entry.key, entry.mod_revision).none_changed_since(keys.DESIRED_HOSTS, read_at)
    return vol if await store.commit(txn.put(entry.key, vol.model_dump())) is not None else None


async def _unmark(store: Store, uuid: str, mark: str) -> bool | None:
    """One try at clearing the mark of a delete that failed, unless another delete took it over (or the
    record is gone)."""
    entry = await store.get(keys.volume(uuid))
    if entry is None:
        return True
    vol = VolumeRecord.model_validate(entry.value)
    if vol.deleting != mark:
        return True
    vol.deleting = None
    txn = Txn().unchanged(entry.key, entry.mod_revision).put(entry.key, vol.model_dump())
    return True if await store.commit(txn) is not None else None


async def _delete_image(store: Store, agents: Agents, ps: StorageRecord, vol: VolumeRecord) -> None:
    """The volume's RBD image goes; Ceph refuses while clones depend on it or it has protected snapshots."""
    try:
        await agents.call(ps, lambda c: c.delete_volume(vol.pool, vol.rbd_image))
    except AgentFailed as e:
        if e.code == "has_dependants":
            info, _ = await agents.call(ps, lambda c: c.volume(vol.pool, vol.rbd_image))
            names = await dependants(store, [c for s in info.snapshots for c in s.children])
            raise HasDependants(f"volume {vol.name} has {len(names)} clone(s) depending on it: "
                                f"{', '.join(names)}; delete or flatten them first") from None
        if e.code == "snapshot_protected":
            protected = ", ".join(s.name for s in vol.snapshots if s.protected) or "?"
            raise SnapshotProtected(name=vol.name, snapshots=protected) from None
        raise
