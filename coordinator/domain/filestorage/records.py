"""What etcd holds for file-based primary storage: storages (`/hs/ps/<uuid>`) and their volumes
(`/hs/fvolume/<uuid>`), and the desired items hosts get from them (`storage/<uuid>`, `volume/<uuid>`),
written with the record (`write`, `rehost`).

A volume's record is the coordinator's bookkeeping (name, VM, snapshots by name, request sequence); the
host that works on it gets `record.spec()` in its stream, written in the same transaction. A storage
attached to every KVM host is streamed to all hosts; one attached to some hosts to each of them.
"""

from __future__ import annotations

import contextlib
from typing import Literal

from pydantic import BaseModel, Field

from agentkit.errors import NotFound
from agentkit.model import (
    ExportSpec,
    ImageRef,
    PrimaryStorageSpec,
    Revert,
    SnapshotSpec,
    StoredVolumeSpec,
    VmSpec,
    VolumeDisk,
    VolumeMigration,
    VolumeSpec,
    stream_key_storage,
    stream_key_volume,
)
from coordinator.domain.errors import MissingReference
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store, Txn

StorageType = Literal["LocalStorage", "SharedMountPoint"]
SHARED_SCOPE = "shared"


class FileStorageRecord(BaseModel):
    uuid: str
    name: str
    type: StorageType
    url: str
    zone: str = "default"
    host_uuids: list[str] = Field([], description="the hosts it is attached to; empty: every KVM host")
    created_at: float

    def spec(self) -> PrimaryStorageSpec:
        return PrimaryStorageSpec(uuid=self.uuid, name=self.name, type=self.type, url=self.url)

    def stream_keys(self) -> list[str]:
        key = stream_key_storage(self.uuid)
        return [keys.desired_for(h, key) for h in self.host_uuids] or [keys.desired_all(key)]

    def attached(self, host_uuid: str) -> bool:
        return not self.host_uuids or host_uuid in self.host_uuids

    def scope(self, host_uuid: str) -> str:
        """Where capacity is counted: each host's own directory, or the one shared filesystem."""
        return host_uuid if self.type == "LocalStorage" else SHARED_SCOPE


class FileSnapshotRecord(BaseModel):
    name: str
    uuid: str
    seq: int
    created_at: float


class FileMigration(BaseModel):
    """A LocalStorage volume on its way to host `target` (filestorage/migration.py): the target pulls it,
    the source keeps its copy until the target reports it verified."""

    id: str
    target: str
    vm_uuid: str | None = Field(None, description="the VM that moves with it once all its volumes are there")
    started_at: float


class FileVolumeRecord(BaseModel):
    uuid: str
    name: str
    primary_storage_uuid: str
    type: Literal["Root", "Data"]
    host_uuid: str = Field(description="the host that works on its files (LocalStorage: the one it lives on)")
    size: int = Field(description="virtual bytes, reserved on its storage")
    image: ImageRef | None = None
    vm_uuid: str | None = None
    snapshots: list[FileSnapshotRecord] = []
    seq: int = Field(0, description="the last request that must be done in order (snapshot, revert)")
    revert: Revert | None = None
    exports: list[ExportSpec] = []
    migration: FileMigration | None = None
    created_at: float

    @property
    def stream_key(self) -> str:
        return keys.desired_for(self.host_uuid, stream_key_volume(self.uuid))

    def spec(self, deleted: bool = False) -> StoredVolumeSpec:
        return StoredVolumeSpec(uuid=self.uuid, storage_uuid=self.primary_storage_uuid, size_bytes=self.size,
                                image=self.image, snapshots=[SnapshotSpec(uuid=s.uuid, seq=s.seq)
                                                             for s in self.snapshots],
                                revert=self.revert, exports=self.exports, deleted=deleted)

    @property
    def target_key(self) -> str | None:
        """The migration target's item (None: not migrating)."""
        return keys.desired_for(self.migration.target, stream_key_volume(self.uuid)) if self.migration else None

    def target_spec(self) -> StoredVolumeSpec:
        """What a migration's target gets: the volume, and where to copy it from."""
        if self.migration is None:
            raise ValueError(f"volume {self.uuid} is not migrating")
        return self.spec().model_copy(update={"migrate_from": VolumeMigration(id=self.migration.id,
                                                                              source_host=self.host_uuid)})

    def volume_disk(self) -> VolumeDisk:
        """How a VM attaches it."""
        return VolumeDisk(storage_uuid=self.primary_storage_uuid)


def write(txn: Txn, rec: FileVolumeRecord, entry: Entry | None, deleted: bool = False) -> None:
    """The record (guarded on `entry`; None: it must not exist yet) and its host's desired item."""
    key = keys.file_volume(rec.uuid)
    if entry is None:
        txn.absent(key)
    else:
        txn.unchanged(key, entry.mod_revision)
    if deleted:
        txn.delete(key)
    else:
        txn.put(key, rec.model_dump(mode="json"))
    txn.put(rec.stream_key, rec.spec(deleted=deleted).model_dump(mode="json"))
    if rec.target_key:
        txn.put(rec.target_key, rec.target_spec().model_dump(mode="json"))


def rehost(txn: Txn, rec: FileVolumeRecord, entry: Entry, host: str) -> None:
    """A shared volume is worked on by `host` from now on (its files stay where they are): its item leaves
    the old host's stream for the new one's, with the record (guarded on `entry`)."""
    txn.delete(rec.stream_key)
    rec.host_uuid = host
    write(txn, rec, entry)


async def load_storage(store: Store, ref: str, field: str | None = None) -> tuple[FileStorageRecord, Entry]:
    """A storage by uuid or name."""
    entry = await store.get(keys.file_storage(ref))
    if entry is None:
        for e in (await store.list(keys.FILE_STORAGES))[0]:
            if isinstance(e.value, dict) and e.value.get("name") == ref:
                entry = e
                break
    if entry is None:
        raise (MissingReference if field else NotFound)(what="primary storage", ident=ref, field=field)
    return FileStorageRecord.model_validate(entry.value), entry


async def find_storage(store: Store, ref: str) -> FileStorageRecord | None:
    """A file-based storage by uuid or name, None when there is none (it may be Ceph)."""
    try:
        return (await load_storage(store, ref))[0]
    except NotFound:
        return None


async def load_storages(store: Store) -> list[FileStorageRecord]:
    return [FileStorageRecord.model_validate(e.value) for e in (await store.list(keys.FILE_STORAGES))[0]]


async def load_volume(store: Store, uuid: str, field: str | None = None) -> tuple[FileVolumeRecord, Entry]:
    entry = await store.get(keys.file_volume(uuid))
    if entry is None:
        raise (MissingReference if field else NotFound)(what="volume", ident=uuid, field=field)
    return FileVolumeRecord.model_validate(entry.value), entry


async def vm_volumes(store: Store, spec: VmSpec) -> list[tuple[VolumeSpec, FileVolumeRecord, Entry]]:
    """A VM's volumes on file-based storage with their records; one deleted meanwhile is left out."""
    out = []
    for vol in spec.volumes:
        if isinstance(vol.disk, VolumeDisk):
            with contextlib.suppress(NotFound):
                out.append((vol, *await load_volume(store, vol.uuid)))
    return out


async def load_volumes(store: Store) -> list[FileVolumeRecord]:
    return [FileVolumeRecord.model_validate(e.value) for e in (await store.list(keys.FILE_VOLUMES))[0]]
