"""A VM's volumes and ISO on file-based primary storage, inside the VM's own transactions.

A new VM from an image gets a root volume (a qcow2 overlay on the image, at least the image's size) and
its data disks (blank) on one storage, on a host where that storage is usable and the bytes fit; the
volumes' records, their hosts' items and the reservation commit with the VM (`plan` then `write`). An
ISO (by image uuid) is fetched into the cache of the VM's storage. Destroying the VM deletes its root
volume and detaches the others; attaching a volume of a SharedMountPoint moves it to the VM's host (a
LocalStorage volume must already be there).
"""

from __future__ import annotations

import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Literal

from agentkit.errors import InUse, Invalid
from agentkit.model import FileDisk, IsoSpec, VmSpec, VolumeDisk, VolumeSpec
from coordinator.domain import hosts, vmrecords
from coordinator.domain.errors import InvalidState
from coordinator.domain.filestorage import images, placement
from coordinator.domain.filestorage.capacity import Scope
from coordinator.domain.filestorage.records import (
    FileStorageRecord,
    FileVolumeRecord,
    find_storage,
    load_storages,
    load_volume,
    rehost,
    vm_volumes,
    write,
)
from coordinator.domain.filestorage.volumes import not_migrating, release
from coordinator.domain.placement import Placed
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn

ISO_ROOT_SIZE = 10 << 30  # a VM installed from an ISO: its blank root volume, unless root_size says


@dataclass(frozen=True)
class Wanted:
    """What a VM create asks of file-based storage."""

    name: str
    storage: str | None = None
    image_uuid: str | None = None
    root_size: int | None = None
    data_disks: list[int] = field(default_factory=list)
    iso_uuid: str | None = None
    raw_root: FileDisk | None = None

    @property
    def any(self) -> bool:
        return bool(self.image_uuid or self.data_disks or self.iso_uuid or (self.raw_root and
                                                                            self.raw_root.storage_uuid))


@dataclass
class Planned:
    placed: Placed  # the VM's host, and its memory to claim
    scope: Scope
    records: list[FileVolumeRecord]
    iso: IsoSpec | None

    @property
    def host(self) -> str:
        return self.placed.hosts[0]

    @property
    def need(self) -> int:
        return sum(r.size for r in self.records)

    def volumes(self) -> list[VolumeSpec]:
        return [VolumeSpec(uuid=r.uuid, role="root" if r.type == "Root" else "data", disk=r.volume_disk(),
                           device_index=i) for i, r in enumerate(self.records)]

    def write(self, txn: Txn, vm_uuid: str) -> None:
        """The volumes' records in the VM's `txn`, guarded on their storage (deleted since on any replica, the
        commit fails and the retry finds it gone)."""
        txn.exists(keys.file_storage(self.scope.storage.uuid))
        for rec in self.records:
            rec.vm_uuid = vm_uuid
            write(txn, rec, None)
        self.scope.reserve(txn, self.need)


async def storage_for(store: Store, ref: str | None, host: str | None = None) -> FileStorageRecord:
    """The storage named, or the one file-based storage there is (attached to `host` if given)."""
    if ref:
        found = await find_storage(store, ref)
        if found is None:
            raise Invalid(f"{ref} is no LocalStorage or SharedMountPoint primary storage (a Ceph volume is made "
                          "with POST /v1/volumes and given as root_volume)", field="primary_storage_uuid")
        return found
    choices = [s for s in await load_storages(store) if host is None or s.attached(host)]
    if len(choices) != 1:
        raise Invalid(f"{len(choices)} file-based primary storages could take it: name one",
                      field="primary_storage_uuid")
    return choices[0]


async def plan(store: Store, want: Wanted, requested_host: str | None, heartbeat_timeout: float, memory_mb: int
               ) -> Planned:
    """Where a new VM (holding `memory_mb`) and its volumes go (placement by capacity), and the volumes' records
    (not written yet)."""
    ps = await storage_for(store, want.storage or (want.raw_root.storage_uuid if want.raw_root else None))
    sizes: list[tuple[Literal["Root", "Data"], int, images.Image | None]] = []
    iso = None
    if want.iso_uuid:
        found = await images.image(store, want.iso_uuid, ("ISO",), "iso_uuid")
        iso = IsoSpec(uuid=uuidlib.uuid4().hex, image=found.ref, storage_uuid=ps.uuid)
    if want.image_uuid:
        image = await images.image(store, want.image_uuid, ("RootVolumeTemplate",), "image_uuid")
        sizes.append(("Root", max(want.root_size or 0, image.virtual_size), image))
    elif iso is not None and want.raw_root is None:
        sizes.append(("Root", want.root_size or ISO_ROOT_SIZE, None))
    sizes += [("Data", size, None) for size in want.data_disks]
    placed, scope = await placement.place(store, ps, sum(s for _, s, _ in sizes), requested_host, heartbeat_timeout,
                                          memory_mb)
    host = placed.hosts[0]
    now = time.time()
    records = [FileVolumeRecord(uuid=uuidlib.uuid4().hex, name=f"{want.name}-{'root' if kind == 'Root' else i}",
                                primary_storage_uuid=ps.uuid, type=kind, host_uuid=host, size=size,
                                image=image.ref if image else None, created_at=now)
               for i, (kind, size, image) in enumerate(sizes)]
    return Planned(placed, scope, records, iso)


async def iso(store: Store, spec: VmSpec, host: str, iso_uuid: str) -> IsoSpec:
    """An ISO image for a VM's cdrom, cached on the VM's storage (its root volume's, else its host's)."""
    found = await images.image(store, iso_uuid, ("ISO",), "iso_uuid")
    root = next((v.disk for v in spec.volumes if isinstance(v.disk, VolumeDisk)), None)
    ps = root.storage_uuid if root else (await storage_for(store, None, host)).uuid
    return IsoSpec(uuid=uuidlib.uuid4().hex, image=found.ref, storage_uuid=ps)


async def on_destroy(store: Store, txn: Txn, spec: VmSpec) -> None:
    """In the VM's destroy: its root volume is deleted (bytes returned), its data volumes detached."""
    for vol, rec, entry in await vm_volumes(store, spec):
        await not_migrating(store, rec, f"destroy VM {spec.name}")
        if vol.role == "root":
            await release(store, txn, rec, entry)
        else:
            rec.vm_uuid = None
            write(txn, rec, entry)


async def attach(store: Store, txn: Txn, spec: VmSpec, host: str, volume_uuid: str, index: int) -> VolumeSpec:
    """A data volume joins the VM (in `txn`): it must be free; a shared one follows the VM to its host."""
    rec, entry = await load_volume(store, volume_uuid, field="volume_uuid")
    await not_migrating(store, rec, "attach it")
    if rec.vm_uuid is not None:
        raise InUse(f"volume {rec.name} is attached to {await vmrecords.title_of(store, rec.vm_uuid)}",
                    field="volume_uuid")
    if rec.type != "Data":
        raise InvalidState(f"volume {rec.name} is a root volume", field="volume_uuid")
    ps = await storage_for(store, rec.primary_storage_uuid)
    if rec.host_uuid != host:
        if ps.type == "LocalStorage":
            raise InvalidState(f"volume {rec.name} lives on {await hosts.title_of(store, rec.host_uuid)} "
                               f"(LocalStorage {ps.name}); VM {spec.name} runs on "
                               f"{await hosts.title_of(store, host)}", field="volume_uuid")
        txn.delete(rec.stream_key)
        rec.host_uuid = host
    rec.vm_uuid = spec.uuid
    write(txn, rec, entry)
    return VolumeSpec(uuid=rec.uuid, disk=rec.volume_disk(), device_index=index)


async def follow(store: Store, txn: Txn, spec: VmSpec, target: str) -> None:
    """The VM moves to host `target` (in `txn`): its SharedMountPoint volumes go with it (the files stay
    where they are); a LocalStorage volume would have to be copied first (volume migration), so 409."""
    for vol in spec.volumes:
        if not isinstance(vol.disk, VolumeDisk):
            continue
        rec, entry = await load_volume(store, vol.uuid)
        if rec.host_uuid == target:
            continue
        ps = await storage_for(store, rec.primary_storage_uuid)
        if ps.type == "LocalStorage":
            raise InvalidState(f"volume {rec.name} of VM {spec.name} lives on "
                               f"{await hosts.title_of(store, rec.host_uuid)} (LocalStorage {ps.name}): it must be "
                               f"migrated to {await hosts.title_of(store, target)} first", field="host_uuid")
        rehost(txn, rec, entry, target)


async def check_idle(store: Store, spec: VmSpec) -> None:
    """InvalidState while a volume of the VM migrates (it starts once they are all there)."""
    for _, rec, _ in await vm_volumes(store, spec):
        await not_migrating(store, rec, f"start VM {spec.name}")


async def detach(store: Store, txn: Txn, volume_uuid: str) -> None:
    rec, entry = await load_volume(store, volume_uuid)
    rec.vm_uuid = None
    write(txn, rec, entry)
