"""A host's file volumes when the host is deleted (hosts.delete): LocalStorage volumes on it, or migrating to or
from it, refuse the delete; the SharedMountPoint volumes it works on go to another host attached to their storage;
the storages that name it name it no more, and one that names it alone refuses the delete."""

from __future__ import annotations

import pytest

from agentkit.errors import InUse
from agentkit.model import StoredVolumeSpec, stream_key_storage
from coordinator.domain import hosts
from coordinator.domain.filestorage import capacity, handover, migration, storages, volumes
from coordinator.domain.filestorage.records import FileStorageRecord, FileVolumeRecord, load_volume, write
from coordinator.etcd import keys
from coordinator.etcd.store import Txn

from ..cloud import HEARTBEAT_TIMEOUT, cloud
from ..memstore import Counting, MemoryStore

GiB = 1 << 30
LOCAL = FileStorageRecord(uuid="l1", name="local", type="LocalStorage", url="/ps", created_at=0)
SHARED = FileStorageRecord(uuid="s1", name="smp", type="SharedMountPoint", url="/smp", created_at=0)


async def storage_cloud(*ready: str, hosts_: tuple[str, ...] = ("h1", "h2", "h3")) -> MemoryStore:
    """KVM hosts `hosts_` with storages `local` and `smp`, both reported Ready by the hosts `ready` only."""
    store = await cloud(*hosts_)
    for ps in (LOCAL, SHARED):
        await store.put(keys.file_storage(ps.uuid), ps.model_dump())
        for h in ready:
            await store.put(keys.observed("storage", f"{ps.uuid}.{h}"), {"state": "Ready",
                                                                         "capacity": {"total": 1 << 40}})
    return store


async def volume(store: MemoryStore, name: str, ps: FileStorageRecord, host: str = "h1") -> FileVolumeRecord:
    rec = await volumes.create(store, name, ps, None, GiB, host, HEARTBEAT_TIMEOUT)
    await store.put(keys.observed("volume", rec.uuid), {"host": host, "state": "Ready"})
    return rec


def item(host: str, uuid: str) -> str:
    return keys.desired_for(host, f"volume/{uuid}")


async def test_a_host_with_local_volumes_on_it_stays_until_they_are_deleted():
    store = await storage_cloud("h1", "h2")
    vols = [await volume(store, f"d{i}", LOCAL) for i in range(7)]
    with pytest.raises(InUse) as e:
        await hosts.delete(store, "kvm-h1")
    assert (e.value.status, e.value.code) == (409, "in_use")
    assert e.value.message == ("host kvm-h1 has 7 LocalStorage volume(s) on it or migrating to or from it: "
                               + ", ".join(f"{v.name} ({v.uuid})" for v in sorted(vols, key=lambda v: v.uuid)[:5])
                               + " and 2 more; delete or migrate them first")
    assert await store.get(keys.host("h1")) is not None and await store.count(keys.desired_host("h1")) == 7
    for v in vols:
        await volumes.delete(store, v.uuid)  # tombstones the host would act on: its disk goes with it
    await hosts.delete(store, "kvm-h1")
    assert await store.get(keys.host("h1")) is None and await store.count(keys.desired_host("h1")) == 0


async def test_a_host_a_local_volume_migrates_to_or_from_stays_either_way():
    store = await storage_cloud("h1", "h2")
    rec = await volume(store, "d1", LOCAL)
    await migration.migrate_volume(store, rec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT)
    for name in ("kvm-h1", "kvm-h2"):
        with pytest.raises(InUse, match=rf"^host {name} has 1 LocalStorage volume\(s\) on it or migrating to or from "
                           rf"it: d1 \({rec.uuid}, migrating from host h1 to h2\); delete or migrate them first$"):
            await hosts.delete(store, name)
    assert await store.count(keys.HOSTS) == 3 and await store.get(item("h2", rec.uuid)) is not None


def made_on_h1() -> tuple[FileVolumeRecord, Txn]:
    """Another replica's new LocalStorage volume on h1."""
    rec = FileVolumeRecord(uuid="late", name="late", primary_storage_uuid="l1", type="Data", host_uuid="h1", size=GiB,
                           created_at=0)
    txn = Txn()
    write(txn, rec, None)
    return rec, txn


async def migrating_back_to_h1(store: MemoryStore) -> tuple[FileVolumeRecord, Txn]:
    """A volume that left h1 (its tombstone still there, the host not having removed its copy yet), and another
    replica's start of its migration back to h1: the tombstone's key rewritten, not created."""
    rec = await volume(store, "back", LOCAL, "h2")
    await store.put(item("h1", rec.uuid), rec.model_copy(update={"host_uuid": "h1"}).spec(deleted=True).model_dump())
    rec, entry = await load_volume(store, rec.uuid)
    rec.migration = migration.FileMigration(id="m1", target="h1", started_at=0)
    txn = Txn()
    write(txn, rec, entry)
    return rec, txn


@pytest.mark.parametrize("how", ["made", "migrating back"])
async def test_a_local_volume_that_comes_to_a_host_while_it_is_deleted_keeps_the_host(how):
    store = await storage_cloud("h1", "h2")
    rec, meanwhile = made_on_h1() if how == "made" else await migrating_back_to_h1(store)
    store.meanwhile.append(meanwhile)  # after the delete read the host's volumes, before it commits
    with pytest.raises(InUse, match=f"host kvm-h1 has 1 LocalStorage volume.*: {rec.name} "):
        await hosts.delete(store, "kvm-h1")
    assert await store.get(keys.host("h1")) is not None
    assert not StoredVolumeSpec.model_validate((await store.get(item("h1", rec.uuid))).value).deleted


async def test_the_shared_volumes_a_deleted_host_worked_on_go_to_another_host_attached_and_ready():
    store = await storage_cloud("h1", "h3")  # h2 does not report smp Ready
    kept = await volume(store, "kept", SHARED)
    gone = await volume(store, "gone", SHARED)
    await volumes.delete(store, gone.uuid)  # h1 did not remove its files yet
    await hosts.delete(store, "kvm-h1")
    assert await store.get(keys.host("h1")) is None and await store.count(keys.desired_host("h1")) == 0
    assert (await load_volume(store, kept.uuid))[0].host_uuid == "h3"
    assert StoredVolumeSpec.model_validate((await store.get(item("h3", kept.uuid))).value).deleted is False
    assert StoredVolumeSpec.model_validate((await store.get(item("h3", gone.uuid))).value).deleted is True
    await volumes.delete(store, kept.uuid)  # and h3 removes its files
    assert StoredVolumeSpec.model_validate((await store.get(item("h3", kept.uuid))).value).deleted is True


async def test_shared_volumes_no_other_host_can_take_keep_the_host_until_they_are_deleted():
    store = await storage_cloud("h1")
    rec = await volume(store, "only", SHARED)
    with pytest.raises(InUse) as e:
        await hosts.delete(store, "kvm-h1")
    assert e.value.message == (f"host kvm-h1 works on 1 volume(s) of SharedMountPoint smp and no other host attached "
                               f"to it reports it Ready: only ({rec.uuid}); make it usable on another host attached "
                               "to it, or delete them, first")
    await volumes.delete(store, rec.uuid)
    await hosts.delete(store, "kvm-h1")  # its tombstone goes with it: nobody else could remove the files
    assert await store.count(keys.desired_host("h1")) == 0


async def test_a_shared_volume_is_not_handed_to_a_host_deleted_meanwhile():
    store = await storage_cloud("h1", "h2", "h3")
    rec = await volume(store, "v", SHARED)
    store.meanwhile.append(Txn().delete(keys.host("h2")))  # after h2 was chosen to take it, before the commit
    await hosts.delete(store, "kvm-h1")
    assert (await load_volume(store, rec.uuid))[0].host_uuid == "h3"
    assert await store.count(keys.desired_host("h2")) == 0 and await store.get(item("h3", rec.uuid)) is not None


async def test_what_a_deleted_host_reported_and_reserved_of_storages_goes_with_it():
    store = await storage_cloud("h1", "h2")
    await store.put(keys.observed("storage", "s1.h1"), {"state": "Ready", "capacity": {"total": 1 << 41}})
    await store.put(keys.observed("storage", "gone.h1"), {"state": "Ready"})  # of a storage deleted since
    await store.put(keys.observed("health", "h1"), {"errors": {}, "at": 1.0})
    await store.put(keys.host_state("h1"), {"state": "Disconnected", "since": 1.0})
    kept = await volume(store, "kept", SHARED)
    await volumes.delete(store, (await volume(store, "gone", LOCAL)).uuid)  # its bytes returned, its scope kept
    assert (await capacity.scope(store, SHARED, "h2", "kvm-h2")).total == 1 << 41  # the largest report
    await hosts.delete(store, "kvm-h1")
    assert [k for k in store.kv if "h1" in k] == []
    for ps in (LOCAL, SHARED):
        assert list((await storages.view(store, ps)).hosts) == ["h2"]
    assert (await capacity.scope(store, SHARED, "h2", "kvm-h2")).total == 1 << 40
    assert (await load_volume(store, kept.uuid))[0].host_uuid == "h2"
    assert await store.get(keys.reserved("s1", "shared")) is not None  # the shared scope's, h2's volume's


@pytest.mark.parametrize("count, reports", [(handover.MOVES * 2 + 3, 0), (handover.MOVES, 60), (0, 300), (3, 250)])
async def test_more_shared_volumes_than_one_transaction_holds_go_in_batches(count, reports):
    """The last batch too, when the host's reports on storages (here of storages deleted since) would not fit
    beside it; and reports more than one transaction holds, with few volumes or none."""
    store = Counting()
    store.kv, store.rev = (await storage_cloud("h1", "h2")).kv, 100
    for i in range(reports):
        await store.put(keys.observed("storage", f"gone{i}.h1"), {"state": "Ready"})
    recs = [await volume(store, f"v{i}", SHARED) for i in range(count)]
    await hosts.delete(store, "kvm-h1")
    assert await store.get(keys.host("h1")) is None and [k for k in store.kv if "h1" in k] == []
    assert [(await load_volume(store, r.uuid))[0].host_uuid for r in recs] == ["h2"] * count
    assert await store.count(keys.desired_host("h2") + "volume/") == len(recs)


def named(uuid: str, *hosts_: str) -> FileStorageRecord:
    return FileStorageRecord(uuid=uuid, name=f"ps-{uuid}", type="SharedMountPoint", url=f"/{uuid}",
                             host_uuids=list(hosts_), created_at=0)


async def add(store: MemoryStore, ps: FileStorageRecord, meanwhile: bool) -> None:
    """Add storage `ps` (its record and the items of its hosts' streams) now, or as another replica does after the
    next commit's reads (`meanwhile`)."""
    txn = Txn().put(keys.file_storage(ps.uuid), ps.model_dump())
    for key in ps.stream_keys():
        txn.put(key, ps.spec().model_dump(mode="json"))
    if meanwhile:
        store.meanwhile.append(txn)
    else:
        await store.commit(txn)


async def host_uuids(store: MemoryStore, uuid: str) -> list[str]:
    return FileStorageRecord.model_validate((await store.get(keys.file_storage(uuid))).value).host_uuids


@pytest.mark.parametrize("meanwhile", [False, True], ids=["before", "meanwhile"])
async def test_the_storages_that_name_a_deleted_host_name_it_no_more(meanwhile):
    """Also one added by another replica after the delete read the storages."""
    store = await storage_cloud("h1", "h2")
    ps = named("n1", "h1", "h2")
    await add(store, ps, meanwhile)
    await hosts.delete(store, "kvm-h1")
    assert await host_uuids(store, ps.uuid) == ["h2"] and await store.count(keys.desired_host("h1")) == 0
    assert await store.get(keys.desired_for("h2", stream_key_storage(ps.uuid))) is not None


@pytest.mark.parametrize("meanwhile", [False, True], ids=["before", "meanwhile"])
async def test_a_storage_that_names_a_host_alone_keeps_it_until_the_storage_is_deleted(meanwhile):
    store = await storage_cloud("h1", "h2")
    ps = named("n1", "h1")
    await add(store, ps, meanwhile)
    with pytest.raises(InUse, match=r"^host kvm-h1 is the only host 1 primary storage\(s\) are attached to: ps-n1 "
                       r"\(n1\); delete them first \(a storage that names no host is attached to every host\)$"):
        await hosts.delete(store, "kvm-h1")
    assert await store.get(keys.host("h1")) is not None and await host_uuids(store, ps.uuid) == ["h1"]
    await storages.delete(store, ps.uuid)
    await hosts.delete(store, "kvm-h1")
    assert await store.get(keys.host("h1")) is None


async def test_a_storage_deleted_meanwhile_is_not_brought_back_by_a_host_delete():
    store = await storage_cloud("h1", "h2")
    ps = named("n1", "h1", "h2")
    await store.put(keys.file_storage(ps.uuid), ps.model_dump())
    store.meanwhile.append(Txn().delete(keys.file_storage(ps.uuid)))  # another replica's, after the delete read it
    await hosts.delete(store, "kvm-h1")
    assert await store.get(keys.host("h1")) is None and await store.get(keys.file_storage(ps.uuid)) is None


async def test_as_many_storages_name_a_host_as_its_last_transaction_rewrites():
    """Beside the most shared volumes moved and reports deleted with the host (3 * MOVES operations)."""
    store = Counting()
    store.kv, store.rev = (await storage_cloud("h1", "h2")).kv, 100
    for i in range(handover.NAMING + 1):
        await store.put(keys.file_storage(f"n{i}"), named(f"n{i}", "h1", "h2").model_dump())
    with pytest.raises(InUse, match=rf"^host kvm-h1 is named by {handover.NAMING + 1} primary storages, more than its "
                       rf"delete detaches at once \({handover.NAMING}\): ps-n0 \(n0\), .* and 20 more; delete some"):
        await hosts.delete(store, "kvm-h1")
    await store.delete(keys.file_storage("n0"))
    recs = [await volume(store, f"v{i}", SHARED) for i in range(handover.MOVES - 1)]
    await store.put(keys.observed("storage", "gone.h1"), {"state": "Ready"})  # 3 reports: the one move left's room
    await hosts.delete(store, "kvm-h1")
    assert await store.get(keys.host("h1")) is None and [k for k in store.kv if "h1" in k] == []
    assert [(await load_volume(store, r.uuid))[0].host_uuid for r in recs] == ["h2"] * len(recs)
