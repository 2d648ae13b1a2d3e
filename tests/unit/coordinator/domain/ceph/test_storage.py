"""A Ceph storage's add and delete (coordinator/domain/ceph/storage.py) on an in-memory store, with what
another replica adds meanwhile: a volume made on it keeps it, another primary storage of its cluster keeps the
cluster's key on the KVM hosts; a storage of the other kind in its zone is judged by the cluster rule, and one
of its cluster gets the VM user's caps too."""

from __future__ import annotations

import pytest

from agentkit.model import CephSecretSpec, stream_key_ceph_secret
from coordinator.domain.ceph import storage
from coordinator.domain.ceph.errors import ClusterMismatch, InUse
from coordinator.domain.ceph.records import StorageRecord, VolumeRecord, load_storages
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Txn

from ..memstore import MemoryStore
from .standin import FSID, settings

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


def added_after_storages_read(monkeypatch: pytest.MonkeyPatch, store: MemoryStore, other: StorageRecord) -> None:
    """`other` is recorded (on another replica) once the add read the storages of `other`'s kind."""
    read = store.snapshot

    async def then_added(prefixes: list[str], keys_only: bool = False) -> tuple[dict[str, list[Entry]], int]:
        if keys.ceph_storages(other.kind) in prefixes and not store.meanwhile:
            store.meanwhile.append(Txn().put(keys.ceph_storage(other.kind, other.uuid), other.model_dump()))
        return await read(prefixes, keys_only)
    monkeypatch.setattr(store, "snapshot", then_added)


async def add_bs1(store: MemoryStore, port: int) -> None:
    await storage.add(store, settings(port), "bs", "bs1", "default", ["root:pw@127.0.0.1"],
                      {"image": ("pool_name", "imgs")})


async def test_a_backup_storage_added_as_primary_storage_of_another_cluster_comes_to_its_zone_is_refused(
        stand_in, monkeypatch):
    """Both adds read no storage of the other kind in the zone, and both were recorded: a zone of two clusters."""
    store = MemoryStore()
    added_after_storages_read(monkeypatch, store, PS)  # of cluster f, in zone default
    with pytest.raises(ClusterMismatch, match=rf"cluster {FSID}, but zone default has Ceph primary storage ceph "
                                              r"\(cluster f\)$"):
        await add_bs1(store, await stand_in("127.0.0.1"))
    assert await load_storages(store, "bs") == [] and await store.get(keys.ceph_storage_name("bs", "bs1")) is None


async def test_a_backup_storage_added_as_the_first_primary_storage_of_its_cluster_comes_gives_vms_its_pool(
        stand_in, agent_calls, monkeypatch):
    """The add read no primary storage of its cluster and left the VM user's caps alone: VMs could not read the
    images their volumes are cloned from."""
    store = MemoryStore()
    added_after_storages_read(monkeypatch, store, PS.model_copy(update={"fsid": FSID}))  # pools r and d
    await add_bs1(store, await stand_in("127.0.0.1"))
    assert [b.name for b in await load_storages(store, "bs")] == ["bs1"]
    asked = [path for _, _, path in agent_calls if path.startswith("/v1/secret")]
    assert asked == ["/v1/secret?pool=d&pool=r&read_only_pool=imgs"]
