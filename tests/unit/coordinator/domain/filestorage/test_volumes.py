"""File volumes a request may not touch (in use, moving, on another host): the refusal names the VM and
the hosts involved by name and uuid, or by uuid once they are gone (on an in-memory store)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentkit.errors import HostStackError
from agentkit.model import stream_key_vm
from coordinator.api import parse
from coordinator.domain import vms
from coordinator.domain.errors import MissingReference
from coordinator.domain.filestorage import storages, vmdisks, volumes
from coordinator.domain.filestorage.records import FileMigration, FileStorageRecord, FileVolumeRecord, load_volumes
from coordinator.domain.hosts import Host
from coordinator.etcd import keys
from coordinator.etcd.store import Txn

from ..cloud import HEARTBEAT_TIMEOUT, cloud, vm
from ..memstore import MemoryStore

LOCAL = FileStorageRecord(uuid="l1", name="local", type="LocalStorage", url="/ps", created_at=0)


async def _volume(store: MemoryStore, **fields: object) -> FileVolumeRecord:
    rec = FileVolumeRecord.model_validate({"uuid": "lv", "name": "data", "primary_storage_uuid": LOCAL.uuid,
                                           "type": "Data", "host_uuid": "h1", "size": 1, "created_at": 0, **fields})
    await store.put(keys.file_storage(LOCAL.uuid), LOCAL.model_dump())
    await store.put(keys.file_volume(rec.uuid), rec.model_dump())
    return rec


@pytest.mark.parametrize("gone", [False, True])
async def test_a_volume_in_use_or_moving_is_refused_naming_its_vm_or_the_host_it_moves_to(gone):
    store = await cloud()
    spec = await vm(store)
    await _volume(store, vm_uuid="v-gone" if gone else spec.uuid)
    with pytest.raises(HostStackError) as e:
        await volumes.delete(store, "lv")
    named = "VM v-gone" if gone else f"VM web ({spec.uuid})"
    assert (e.value.status, e.value.code, e.value.field) == (409, "in_use", None)
    assert e.value.message == f"volume data is attached to {named}; detach it or destroy the VM first"
    await _volume(store, migration=FileMigration(id="m1", target="h9" if gone else "h2", started_at=0))
    with pytest.raises(HostStackError) as e:
        await volumes.delete(store, "lv")
    named = "host h9" if gone else "host kvm-h2 (h2)"
    assert (e.value.status, e.value.code) == (409, "invalid_state")
    assert e.value.message == f"volume data is migrating to {named}: delete it once it is there"


async def test_a_local_volume_attached_from_another_host_is_refused_naming_both_hosts():
    store = await cloud()
    spec = await vm(store)
    await _volume(store, host_uuid="h2")
    with pytest.raises(HostStackError) as e:
        await vmdisks.attach(store, Txn(), spec, "h1", "lv", 1)
    assert (e.value.code, e.value.field) == ("invalid_state", "volume_uuid")
    assert e.value.message == ("volume data lives on host kvm-h2 (h2) (LocalStorage local); VM web runs on host "
                               "kvm-h1 (h1)")


def test_a_storage_path_that_is_not_absolute_is_refused_naming_the_field_url():
    with pytest.raises(ValidationError) as e:
        storages.FileStorageAdd(name="local", type="LocalStorage", url="relative/path")
    error = parse.invalid(e.value, "body")  # as the API answers it (`hs storage add-local`: argument URL)
    assert (error.field, error.message) == ("url", "body field url: 'relative/path' is not an absolute, normalized "
                                                   "path (and not /)")


async def test_a_storage_attached_to_a_host_of_another_kind_names_that_host():
    store = await cloud()
    ceph = Host(uuid="c1", name="ceph-1", address="198.18.0.3", kind="ceph", token_sha256="", created=0.0)
    await store.put(keys.host(ceph.uuid), ceph.record())
    body = storages.FileStorageAdd(name="local", type="LocalStorage", url="/ps", host_uuids=["kvm-h1", "ceph-1"])
    with pytest.raises(HostStackError) as e:
        await storages.add(store, body)
    assert (e.value.code, e.value.field, e.value.message) == ("invalid", "host_uuids",
                                                              "host ceph-1 (c1) is not a KVM host")


async def test_a_snapshot_the_volume_lacks_is_refused_naming_the_volume_and_the_argument():
    store = await cloud()
    await _volume(store)
    for verb in (volumes.delete_snapshot, volumes.rollback):
        with pytest.raises(HostStackError) as e:
            await verb(store, "lv", "nosnap")
        assert (e.value.status, e.value.field, e.value.message) == (404, "snapshot",
                                                                    "volume data has no snapshot nosnap")


async def test_a_shrink_is_refused_in_units_a_person_reads():
    store = MemoryStore()
    await _volume(store, size=1 << 30)
    with pytest.raises(HostStackError) as e:
        await volumes.resize(store, "lv", 512 << 20)
    assert (e.value.status, e.value.code, e.value.field) == (400, "invalid", "size")
    assert e.value.message == ("volume data is 1 GiB (1073741824 bytes), more than the 512 MiB asked: qcow2 "
                               "volumes only grow")


async def test_a_storage_delete_holds_only_while_no_volume_came_to_it_and_retries_a_changed_record():
    store = await cloud()
    rec = await _volume(store)
    await store.delete(keys.file_volume(rec.uuid))
    store.meanwhile.append(Txn().put(keys.file_volume(rec.uuid), rec.model_dump()))  # made on another replica
    with pytest.raises(HostStackError) as e:
        await storages.delete(store, "local")
    assert (e.value.status, e.value.code) == (409, "in_use")
    assert e.value.message == "primary storage local still holds 1 volume(s): data; delete them first"
    await store.delete(keys.file_volume(rec.uuid))
    store.meanwhile.append(Txn().put(keys.file_storage(LOCAL.uuid), LOCAL.model_dump()))  # rewritten meanwhile
    await storages.delete(store, "local")
    assert [k for k in store.kv if LOCAL.uuid in k] == []


async def test_a_volume_made_on_a_storage_deleted_meanwhile_is_refused_and_not_recorded():
    store = await cloud()
    await store.put(keys.file_storage(LOCAL.uuid), LOCAL.model_dump())
    await store.put(keys.observed("storage", f"{LOCAL.uuid}.h1"), {"state": "Ready", "capacity": {"total": 1 << 40}})
    store.meanwhile.append(Txn().delete(keys.file_storage(LOCAL.uuid)))  # on another replica, after it was read
    with pytest.raises(MissingReference, match="^primary storage local does not exist$") as e:
        await volumes.create(store, "late", LOCAL, None, 1 << 30, "h1", HEARTBEAT_TIMEOUT)
    assert (e.value.status, e.value.field) == (400, "primary_storage_uuid")
    assert await load_volumes(store) == []


async def test_a_local_volume_attached_to_a_vm_moved_from_its_host_meanwhile_is_refused_naming_both_hosts():
    store = await cloud()
    spec = await vm(store, state="Stopped")
    await _volume(store)  # on h1, where the VM was when the attach read it
    key = keys.desired_for("h1", stream_key_vm(spec.uuid))
    moved = spec.model_copy(update={"generation": spec.generation + 1}).model_dump(mode="json")
    store.meanwhile.append(Txn().delete(key).put(keys.vm_index(spec.uuid), {"host": "h2"})
                           .put(keys.desired_for("h2", stream_key_vm(spec.uuid)), moved))  # migrated on another replica
    with pytest.raises(HostStackError) as e:
        await vms.attach_volume(store, spec.uuid, None, [], "lv")
    assert (e.value.code, e.value.field) == ("invalid_state", "volume_uuid")
    assert e.value.message == ("volume data lives on host kvm-h1 (h1) (LocalStorage local); VM web runs on host "
                               "kvm-h2 (h2)")
    assert (await load_volumes(store))[0].vm_uuid is None
