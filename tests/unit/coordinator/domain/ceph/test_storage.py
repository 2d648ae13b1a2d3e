"""A Ceph storage's delete (coordinator/domain/ceph/storage.py) on an in-memory store, with what another
replica adds meanwhile: a volume made on it keeps it, another primary storage of its cluster keeps the
cluster's key on the KVM hosts."""

from __future__ import annotations

import pytest

from agentkit.model import CephSecretSpec, stream_key_ceph_secret
from coordinator.domain.ceph import storage
from coordinator.domain.ceph.errors import InUse
from coordinator.domain.ceph.records import StorageRecord, VolumeRecord, load_storages
from coordinator.etcd import keys
from coordinator.etcd.store import Txn

from ..memstore import MemoryStore

PS = StorageRecord(uuid="c1", name="ceph", kind="ps", zone="default", fsid="f", mons=[],
                   pools={"rootVolume": "r", "dataVolume": "d"}, created_at=0)
SECRET = keys.desired_all(stream_key_ceph_secret(PS.fsid))


async def ceph() -> MemoryStore:
    """The primary storage PS, and its cluster's key published for the KVM hosts."""
    store = MemoryStore()
    await store.put(keys.ceph_storage("ps", PS.uuid), PS.model_dump())
    await store.put(keys.ceph_storage_name("ps", PS.name), PS.uuid)
    await store.put(SECRET, CephSecretSpec(uuid="s", user="client.hs", key="k", fsid=PS.fsid).model_dump())
    return store


async def test_a_volume_made_on_a_primary_storage_while_it_is_deleted_keeps_it():
    store = await ceph()
    vol = VolumeRecord(uuid="v1", name="late", primary_storage_uuid=PS.uuid, type="Data", pool="d",
                       rbd_image="vol-v1", size=1, fsid=PS.fsid, status="Creating", created_at=0)
    store.meanwhile.append(Txn().put(keys.volume(vol.uuid), vol.model_dump()))
    with pytest.raises(InUse, match="still holds 1 volumes: late; delete them first"):  # after it read none
        await storage.delete(store, "ps", PS.name)
    assert [p.uuid for p in await load_storages(store, "ps")] == [PS.uuid]


async def test_a_primary_storage_of_the_cluster_added_meanwhile_keeps_the_clusters_key_on_the_hosts():
    store = await ceph()
    other = PS.model_copy(update={"uuid": "c2", "name": "other"})
    store.meanwhile.append(Txn().put(keys.ceph_storage("ps", other.uuid), other.model_dump()))
    await storage.delete(store, "ps", PS.name)  # after it read no other
    assert [p.uuid for p in await load_storages(store, "ps")] == [other.uuid]
    assert await store.get(SECRET) is not None
