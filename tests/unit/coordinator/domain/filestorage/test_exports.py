"""An image of a file volume (coordinator/domain/filestorage/exports.py) on an in-memory store, as another replica
deletes the image store it goes to."""

from __future__ import annotations

import pytest

from agentkit.model import StoredVolumeSpec
from coordinator.domain.errors import MissingReference
from coordinator.domain.filestorage import exports
from coordinator.domain.filestorage.records import FileVolumeRecord, load_volume, write
from coordinator.domain.imagestore.storage import ImageStoreRecord
from coordinator.etcd import keys
from coordinator.etcd.store import Txn

from ..memstore import MemoryStore

BS = ImageStoreRecord(uuid="bs1", name="bs", host_uuid="u1", path="/srv/images", created_at=0)


async def test_an_image_of_a_volume_to_an_image_store_deleted_meanwhile_is_refused_and_not_exported():
    store = MemoryStore()
    await store.put(keys.image_store(BS.uuid), BS.model_dump())
    vol = FileVolumeRecord(uuid="v1", name="data", primary_storage_uuid="l1", type="Data", host_uuid="h1",
                           size=1 << 30, created_at=0)
    txn = Txn()
    write(txn, vol, None)
    await store.commit(txn)
    store.meanwhile.append(Txn().delete(keys.image_store(BS.uuid)))  # on another replica, after the image read it
    with pytest.raises(MissingReference, match="^backup storage bs1 does not exist$") as e:
        await exports.start(store, BS.uuid, "img1", vol.uuid, None, None)
    assert (e.value.status, e.value.field) == (400, "backup_storage_uuid")
    assert await store.count(keys.IMAGES) == 0
    assert (await load_volume(store, vol.uuid))[0].exports == []
    assert StoredVolumeSpec.model_validate((await store.get(vol.stream_key)).value).exports == []  # the host makes none
