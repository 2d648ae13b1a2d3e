"""A Ceph volume's creation and delete (coordinator/domain/ceph/volumes.py) on an in-memory store, as another
replica deletes its primary storage or gives the volume to a VM; its delete against a stand-in cephagent."""

from __future__ import annotations

import contextlib

import pytest

from agentkit.errors import Invalid
from agentkit.model import VmSpec, VolumeSpec, stream_key_vm
from coordinator.domain.ceph import volumes
from coordinator.domain.ceph.errors import InUse, SnapshotProtected
from coordinator.domain.ceph.records import MonRecord, StorageRecord, VolumeRecord, load_volumes
from coordinator.domain.errors import MissingReference
from coordinator.etcd import keys
from coordinator.etcd.store import Txn
from coordinator.settings import CoordinatorSettings

from ..memstore import MemoryStore
from .standin import settings

PS = StorageRecord(uuid="c1", name="ceph", kind="ps", zone="default", fsid="f", pools={"rootVolume": "r",
                   "dataVolume": "d"}, mons=[MonRecord(host="127.0.0.1", mon_port=6789, ssh_port=22,
                                                       ssh_username="root", ssh_password="x")], created_at=0)
VOL = VolumeRecord(uuid="v1", name="data", primary_storage_uuid=PS.uuid, type="Data", pool="d", rbd_image="vol-v1",
                   size=1, fsid=PS.fsid, status="Ready", created_at=0)
DELETE = ("127.0.0.1", "DELETE", "/v1/volumes/d/vol-v1")


async def with_volume(vol: VolumeRecord = VOL) -> MemoryStore:
    store = MemoryStore()
    await store.put(keys.ceph_storage("ps", PS.uuid), PS.model_dump())
    await store.put(keys.volume(vol.uuid), vol.model_dump())
    return store


async def test_a_volume_made_on_a_primary_storage_deleted_meanwhile_is_refused_and_not_recorded():
    store = MemoryStore()
    await store.put(keys.ceph_storage("ps", PS.uuid), PS.model_dump())
    store.meanwhile.append(Txn().delete(keys.ceph_storage("ps", PS.uuid)))
    with pytest.raises(MissingReference, match="^primary storage c1 does not exist$") as e:  # after it read it
        await volumes.create(store, CoordinatorSettings(admin_token="a" * 16), "data", PS.uuid, None, 1 << 30)
    assert (e.value.status, e.value.field) == (400, "primary_storage_uuid")
    assert await load_volumes(store) == []


async def test_a_volume_a_vm_takes_while_it_is_deleted_is_kept(stand_in, agent_calls):
    """The delete read no VM using it, then deleted its RBD image: the VM's disk was gone."""
    store = await with_volume()
    vm = VmSpec(uuid="vm1", name="web", volumes=[VolumeSpec(uuid="d1", disk=VOL.rbd_disk(PS), device_index=1)])
    store.meanwhile.append(Txn().put(keys.desired_for("h1", stream_key_vm(vm.uuid)), vm.model_dump(mode="json")))
    with pytest.raises(InUse, match="^volume data is attached to VM web; detach it or destroy the VM first$"):
        await volumes.delete(store, settings(await stand_in("127.0.0.1")), VOL.uuid)
    assert await load_volumes(store) == [VOL] and DELETE not in agent_calls


@pytest.mark.parametrize("refused", [None, (409, "snapshot_protected")], ids=["deleted", "refused"])
async def test_a_delete_that_was_interrupted_goes_on_when_deleting_again(stand_in, agent_calls, refused):
    """Marked by a delete that never ended, the volume is deleted by the next one, or usable again once that
    one is refused."""
    store = await with_volume(VOL.model_copy(update={"deleting": "a replica that died"}))
    port = await stand_in("127.0.0.1", delete_image=refused)
    with pytest.raises(SnapshotProtected) if refused else contextlib.nullcontext():
        await volumes.delete(store, settings(port), VOL.uuid)
    assert await load_volumes(store) == ([VOL] if refused else []) and DELETE in agent_calls


async def test_a_size_between_sectors_is_refused_before_a_record_or_an_agent(stand_in, agent_calls):
    """Ceph would make an RBD image of 1000 bytes; a disk is whole 512-byte sectors to qemu and its guest."""
    store = await with_volume()
    s = settings(await stand_in("127.0.0.1"))
    for call in (volumes.create(store, s, "odd", PS.uuid, None, 1000),
                 volumes.resize(store, s, VOL.uuid, (1 << 30) + 1, allow_shrink=False)):
        with pytest.raises(Invalid, match="is not a multiple of 512 bytes") as e:
            await call
        assert (e.value.status, e.value.field) == (400, "size")
    assert await load_volumes(store) == [VOL] and agent_calls == []
