"""The one volumes resource over every primary storage type (on an in-memory store)."""

from __future__ import annotations

import pytest

from agentkit.errors import NotFound
from coordinator.domain import volumes
from coordinator.domain.ceph.records import StorageRecord, VolumeRecord
from coordinator.domain.filestorage.records import FileStorageRecord, FileVolumeRecord
from coordinator.etcd import keys
from coordinator.settings import CoordinatorSettings

from .memstore import MemoryStore

CEPH = StorageRecord(uuid="c1", name="ceph", kind="ps", zone="default", fsid="f", mons=[],
                     pools={"rootVolume": "r", "dataVolume": "d"}, created_at=0)
LOCAL = FileStorageRecord(uuid="l1", name="local", type="LocalStorage", url="/ps", created_at=0)


async def storages() -> MemoryStore:
    """A Ceph and a LocalStorage primary storage with a volume each."""
    store = MemoryStore()
    await store.put(keys.ceph_storage("ps", CEPH.uuid), CEPH.model_dump())
    await store.put(keys.ceph_storage_name("ps", CEPH.name), CEPH.uuid)
    await store.put(keys.volume("cv"), VolumeRecord(uuid="cv", name="cv", primary_storage_uuid=CEPH.uuid, type="Data",
                                                     pool="d", rbd_image="vol-cv", size=1, fsid="f", status="Ready",
                                                     created_at=0).model_dump())
    await store.put(keys.file_storage(LOCAL.uuid), LOCAL.model_dump())
    await store.put(keys.file_volume("lv"), FileVolumeRecord(uuid="lv", name="lv", primary_storage_uuid=LOCAL.uuid,
                                                             type="Data", host_uuid="h1", size=1,
                                                             created_at=0).model_dump())
    return store


async def test_volumes_are_listed_by_their_storage_named_by_uuid_or_name():
    store = await storages()
    assert sorted(v.uuid for v in await volumes.list_all(store, None)) == ["cv", "lv"]
    for ref, uuids in (("c1", ["cv"]), ("ceph", ["cv"]), ("l1", ["lv"]), ("local", ["lv"])):
        assert [v.uuid for v in await volumes.list_all(store, ref)] == uuids, ref


async def test_a_storage_that_does_not_exist_is_a_400_naming_the_filter_not_an_empty_list():
    store = await storages()
    settings = CoordinatorSettings(admin_token="t" * 16)
    for asked in (lambda: volumes.list_all(store, "lcoal"),
                  lambda: volumes.create(store, settings, "v", "lcoal", None, 1 << 30, None, None)):
        with pytest.raises(NotFound) as e:
            await asked()
        assert (e.value.status, e.value.code, e.value.field) == (400, "not_found", "primary_storage_uuid")
        assert e.value.message == "primary storage lcoal does not exist"  # of either type: not "Ceph primary …"
