"""Adding a file-based primary storage (coordinator/domain/filestorage/storages.py) on an in-memory store: its
name, and a SharedMountPoint's path, held by one storage, and nothing of it in a host deleted meanwhile, races with
other replicas included; as many hosts named as one transaction holds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentkit.errors import NotFound
from coordinator.domain.errors import Exists
from coordinator.domain.filestorage import storages
from coordinator.domain.filestorage.records import FileStorageRecord, load_storages
from coordinator.etcd import keys
from coordinator.etcd.store import Txn

from ..cloud import cloud
from ..memstore import Counting, MemoryStore


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


async def test_a_storage_named_on_a_host_deleted_meanwhile_is_refused_and_leaves_it_nothing():
    store = await cloud("h1", "h2")
    store.meanwhile.append(Txn().delete(keys.host("h2")).delete(keys.desired_host("h2"), prefix=True))  # its delete
    with pytest.raises(NotFound, match="^host kvm-h2 does not exist$"):  # after the add found it
        await storages.add(store, storages.FileStorageAdd(name="ps", type="LocalStorage", url="/ps",
                                                          host_uuids=["kvm-h1", "kvm-h2"]))
    assert await load_storages(store) == [] and await store.count(keys.DESIRED_HOSTS) == 0


async def test_a_storage_names_as_many_hosts_as_its_add_holds_in_one_transaction():
    store = Counting()
    store.kv = (await cloud(*(f"h{i}" for i in range(storages.MAX_HOSTS + 1)))).kv
    named = [f"h{i}" for i in range(storages.MAX_HOSTS)]
    rec = await storages.add(store, storages.FileStorageAdd(name="ps", type="LocalStorage", url="/ps",
                                                            host_uuids=named))
    assert rec.host_uuids == sorted(named) and await store.count(keys.DESIRED_HOSTS) == storages.MAX_HOSTS
    with pytest.raises(ValidationError, match="at most 126 items"):  # the edge answers 413 naming host_uuids
        storages.FileStorageAdd(name="more", type="LocalStorage", url="/more", host_uuids=[*named, "h126"])
