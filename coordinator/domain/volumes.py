"""The one `volumes` resource over every primary storage type: each call goes to the storage family that
holds the volume (or the primary storage a new one is asked on) — Ceph (`domain/ceph/volumes.py`, RBD
images through the cephagent) or LocalStorage/SharedMountPoint (`domain/filestorage/volumes.py`, qcow2
files made by the hosts' agents) — and answers that family's view.
"""

from __future__ import annotations

from agentkit.errors import Invalid, NotFound
from coordinator.domain.ceph import records as ceph_records
from coordinator.domain.ceph import volumes as ceph
from coordinator.domain.ceph.views import VolumeView as CephVolume
from coordinator.domain.ceph.volumes import VolumeType
from coordinator.domain.errors import InvalidState, MissingReference
from coordinator.domain.filestorage import migration, records
from coordinator.domain.filestorage import volumes as files
from coordinator.domain.filestorage.volumes import FileVolumeView as FileVolume
from coordinator.etcd import keys
from coordinator.etcd.store import Store
from coordinator.settings import CoordinatorSettings

View = CephVolume | FileVolume


async def _file(store: Store, uuid: str) -> bool:
    return await store.get(keys.file_volume(uuid)) is not None


async def create(store: Store, settings: CoordinatorSettings, name: str, ps_ref: str, image_uuid: str | None,
                 size: int | None, kind: VolumeType | None, host_ref: str | None) -> View:
    ps = await records.find_storage(store, ps_ref)
    if ps is None:  # a Ceph one, or none: named as a primary storage, not as a Ceph one the user never meant
        return await ceph.create(store, settings, name, await _storage_uuid(store, ps_ref), image_uuid, size, kind)
    rec = await files.create(store, name, ps, image_uuid, size, host_ref, settings.heartbeat_timeout, kind)
    return await files.view(store, rec)


async def _storage_uuid(store: Store, ref: str) -> str:
    """The uuid of a primary storage of any type named by uuid or name (a filter the caller gave: 400 when it
    names none, rather than an empty list that looks like an answer)."""
    found = await records.find_storage(store, ref)
    if found is not None:
        return found.uuid
    try:
        return (await ceph_records.load_storage(store, "ps", ref))[0].uuid
    except NotFound:
        raise MissingReference(what="primary storage", ident=ref, field="primary_storage_uuid") from None


async def list_all(store: Store, ps_ref: str | None) -> list[View]:
    """Every volume, or those of one primary storage (uuid or name)."""
    ps_uuid = await _storage_uuid(store, ps_ref) if ps_ref else None
    found: list[View] = list(await ceph.list_all(store, ps_uuid))
    found += [await files.view(store, v) for v in await records.load_volumes(store)
              if ps_uuid in (None, v.primary_storage_uuid)]
    return found


async def show(store: Store, settings: CoordinatorSettings, uuid: str, live: bool) -> View:
    if await _file(store, uuid):
        return await files.view(store, (await records.load_volume(store, uuid))[0])
    return await ceph.show(store, settings, uuid, live)


async def resize(store: Store, settings: CoordinatorSettings, uuid: str, size: int, allow_shrink: bool) -> View:
    if await _file(store, uuid):
        return await files.view(store, await files.resize(store, uuid, size))
    return await ceph.resize(store, settings, uuid, size, allow_shrink)


async def flatten(store: Store, settings: CoordinatorSettings, uuid: str) -> View:
    if await _file(store, uuid):
        raise Invalid("flatten applies to Ceph volumes (a file volume's image stays in its host's cache)")
    return await ceph.flatten(store, settings, uuid)


async def snapshot(store: Store, settings: CoordinatorSettings, uuid: str, name: str, protect: bool) -> View:
    if await _file(store, uuid):
        if protect:
            raise Invalid("protected snapshots are Ceph's (nothing is cloned from a file snapshot)", field="protect")
        return await files.view(store, await files.snapshot(store, uuid, name))
    return await ceph.snapshot(store, settings, uuid, name, protect)


async def rollback(store: Store, settings: CoordinatorSettings, uuid: str, snap: str) -> View:
    if await _file(store, uuid):
        return await files.view(store, await files.rollback(store, uuid, snap))
    return await ceph.rollback(store, settings, uuid, snap)


async def delete_snapshot(store: Store, settings: CoordinatorSettings, uuid: str, snap: str) -> View:
    if await _file(store, uuid):
        return await files.view(store, await files.delete_snapshot(store, uuid, snap))
    return await ceph.delete_snapshot(store, settings, uuid, snap)


async def delete(store: Store, settings: CoordinatorSettings, uuid: str) -> None:
    if await _file(store, uuid):
        await files.delete(store, uuid)
    else:
        await ceph.delete(store, settings, uuid)


async def migrate(store: Store, settings: CoordinatorSettings, uuid: str, host_ref: str) -> View:
    """Move a LocalStorage volume to another host (filestorage/migration.py); answers at once, the
    view's `progress` follows the copy."""
    if not await _file(store, uuid):
        await ceph.show(store, settings, uuid, False)  # 404 for a volume that does not exist
        raise InvalidState("a Ceph volume is reached from every host: there is nothing to migrate",
                           field="volume_uuid")
    rec = await migration.migrate_volume(store, uuid, host_ref, settings.heartbeat_timeout)
    return await files.view(store, rec)
