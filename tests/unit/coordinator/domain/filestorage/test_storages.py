"""Adding a file-based primary storage (coordinator/domain/filestorage/storages.py) on an in-memory store: its
name, and a SharedMountPoint's path, held by one storage, races with other replicas included."""

from __future__ import annotations

import pytest

from coordinator.domain.errors import Exists
from coordinator.domain.filestorage import storages
from coordinator.domain.filestorage.records import FileStorageRecord, load_storages
from coordinator.etcd import keys
from coordinator.etcd.store import Txn

from ..memstore import MemoryStore


@pytest.mark.parametrize("name, url, message, field", [
    ("shared", "/other", "a primary storage named shared exists", "name"),
    ("ours", "/ps", "primary storage shared already has path /ps", "url"),
])
async def test_a_storage_added_by_another_replica_meanwhile_refuses_its_name_and_its_shared_path(
        name: str, url: str, message: str, field: str):
    store = MemoryStore()
    theirs = FileStorageRecord(uuid="s1", name="shared", type="SharedMountPoint", url="/ps", created_at=0)
    store.meanwhile.append(Txn().put(keys.file_storage(theirs.uuid), theirs.model_dump()))
    with pytest.raises(Exists, match=f"^{message}$") as e:  # after it read none
        await storages.add(store, storages.FileStorageAdd(name=name, type="SharedMountPoint", url=url))
    assert e.value.field == field
    assert [s.uuid for s in await load_storages(store)] == ["s1"]
