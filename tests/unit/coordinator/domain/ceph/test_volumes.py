"""A Ceph volume's creation (coordinator/domain/ceph/volumes.py) on an in-memory store, as another replica
deletes its primary storage."""

from __future__ import annotations

import pytest

from coordinator.domain.ceph import volumes
from coordinator.domain.ceph.records import StorageRecord, load_volumes
from coordinator.domain.errors import MissingReference
from coordinator.etcd import keys
from coordinator.etcd.store import Txn
from coordinator.settings import CoordinatorSettings

from ..memstore import MemoryStore

PS = StorageRecord(uuid="c1", name="ceph", kind="ps", zone="default", fsid="f", mons=[],
                   pools={"rootVolume": "r", "dataVolume": "d"}, created_at=0)


async def test_a_volume_made_on_a_primary_storage_deleted_meanwhile_is_refused_and_not_recorded():
    store = MemoryStore()
    await store.put(keys.ceph_storage("ps", PS.uuid), PS.model_dump())
    store.meanwhile.append(Txn().delete(keys.ceph_storage("ps", PS.uuid)))
    with pytest.raises(MissingReference, match="^primary storage c1 does not exist$") as e:  # after it read it
        await volumes.create(store, CoordinatorSettings(admin_token="a" * 16), "data", PS.uuid, None, 1 << 30)
    assert (e.value.status, e.value.field) == (400, "primary_storage_uuid")
    assert await load_volumes(store) == []
