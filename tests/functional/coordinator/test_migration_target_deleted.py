"""Another replica's delete of a KVM host racing what goes to that host (real etcd): a cold migration with
LocalStorage volumes toward it (the deleted host receives nothing, and the request is refused as for a host that
is not there), a LocalStorage volume made on it (the delete is refused); and the delete's own transaction that
hands the shared volumes the host worked on to another host, in batches as etcd bounds a transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from agentkit.errors import HostStackError, InUse
from coordinator.domain import hosts, vmrecords, vms
from coordinator.domain.filestorage import handover, volumes
from coordinator.domain.filestorage.records import FileStorageRecord, load_volume
from coordinator.domain.hosts import Host
from coordinator.etcd import keys
from coordinator.etcd.hints import Hints
from coordinator.etcd.store import Store, Txn

pytestmark = pytest.mark.real
HEARTBEAT_TIMEOUT = 3.0
GiB = 1 << 30
LOCAL = FileStorageRecord(uuid="l1", name="local", type="LocalStorage", url="/ps", created_at=0)


class Racing(Store):
    """Runs `first` once, right before the next commit: another replica's write between the reads a commit
    depends on and that commit."""

    first: Callable[[], Awaitable[object]] | None = None

    async def commit(self, txn: Txn) -> int | None:
        if (write := self.first) is not None:
            self.first = None
            await write()
        return await super().commit(txn)


@pytest.fixture
async def store(etcd):
    """KVM hosts h1 and h2, each with LocalStorage l1 Ready."""
    s = Racing(etcd.endpoint)
    await s.connect()
    await s.put(keys.file_storage(LOCAL.uuid), LOCAL.model_dump())
    for uuid in ("h1", "h2"):
        host = Host(uuid=uuid, name=f"kvm-{uuid}", address="198.18.0.2", kind="kvm", token_sha256="", created=0.0)
        await s.put(keys.host(uuid), host.record())
        await s.put(keys.observed("storage", f"l1.{uuid}"), {"state": "Ready", "capacity": {"total": 1 << 40}})
    yield s
    await s.delete(keys.ROOT, prefix=True)
    await s.close()


async def test_a_stopped_vm_and_its_local_volume_stay_where_they_are_when_the_target_host_goes_meanwhile(store):
    create = vms.VmCreate(name="web", host_uuid="h1", state="Stopped", data_disks=[1 << 30])
    _, spec = await vms.create(store, Hints(), create, HEARTBEAT_TIMEOUT, [])
    volume = next(v.uuid for v in spec.volumes if v.role == "data")
    await store.put(keys.observed("volume", volume), {"host": "h1", "state": "Ready"})
    store.first = lambda: hosts.delete(store, "h2")  # found no VM on h2: the volume is not one
    with pytest.raises(HostStackError) as e:
        await vms.migrate(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT)
    assert (e.value.status, e.value.field, e.value.message) == (400, "host_uuid", "no KVM host h2")
    rec, _ = await load_volume(store, volume)
    assert (rec.host_uuid, rec.migration, (await vmrecords.load(store, spec.uuid))[0]) == ("h1", None, "h1")
    assert await store.get(keys.host("h2")) is None and await store.count(keys.desired_host("h2")) == 0
    assert await store.get(keys.reserved("l1", "h2")) is None


async def test_a_local_volume_made_on_a_host_while_another_replica_deletes_it_keeps_the_host(store):
    store.first = lambda: volumes.create(store, "late", LOCAL, None, GiB, "h2", HEARTBEAT_TIMEOUT)
    with pytest.raises(InUse, match="^host kvm-h2 has 1 LocalStorage volume.*: late "):
        await hosts.delete(store, "kvm-h2")  # it read no volume on h2, then one came
    assert await store.get(keys.host("h2")) is not None and await store.count(keys.desired_host("h2")) == 1


async def test_the_shared_volumes_of_a_deleted_host_go_to_another_host_in_transactions_etcd_takes(store):
    shared = FileStorageRecord(uuid="s1", name="smp", type="SharedMountPoint", url="/smp", created_at=0)
    await store.put(keys.file_storage(shared.uuid), shared.model_dump())
    for uuid in ("h1", "h2"):
        await store.put(keys.observed("storage", f"s1.{uuid}"), {"state": "Ready", "capacity": {"total": 1 << 40}})
    made = [await volumes.create(store, f"v{i}", shared, None, GiB, "h2", HEARTBEAT_TIMEOUT)
            for i in range(2 * handover.MOVES + 3)]  # three transactions' worth
    await volumes.delete(store, made.pop().uuid)  # its files not removed yet: its tombstone goes along
    await hosts.delete(store, "kvm-h2")
    assert await store.get(keys.host("h2")) is None and await store.count(keys.desired_host("h2")) == 0
    assert [e.key for e in (await store.list(keys.ROOT, keys_only=True))[0] if "h2" in e.key] == []  # its reports
    assert {(await load_volume(store, rec.uuid))[0].host_uuid for rec in made} == {"h1"}
    assert await store.count(keys.desired_host("h1") + "volume/") == len(made) + 1
