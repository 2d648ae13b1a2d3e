"""The observed intake: each kind's body checked before it is stored; what an event changes besides its
record is done even when the request that stored it failed; a report on an object (or from a host) deleted
before it is stored leaves nothing behind."""

from __future__ import annotations

from typing import Any

import pytest

from agentkit.errors import Invalid
from agentkit.model import ObservedBatch, ObservedEvent, VmSpec, stream_key_vm
from coordinator.domain import hosts, vmnics
from coordinator.domain.filestorage import storages, volumes
from coordinator.domain.filestorage.records import FileStorageRecord
from coordinator.domain.hosts import Host
from coordinator.domain.observed import check, ingest
from coordinator.etcd import keys
from coordinator.etcd.store import StoreUnavailable, Txn

from .cloud import HEARTBEAT_TIMEOUT, cloud, network, vm
from .memstore import MemoryStore

LOCAL = FileStorageRecord(uuid="l1", name="local", type="LocalStorage", url="/ps", created_at=0)
READY = {"storage_uuid": "l1", "type": "LocalStorage", "url": "/ps", "state": "Ready"}

VM = {"state": "Running", "console": {"protocol": "vnc", "kinds": ["vnc", "serial"]},
      "boot_order": ["HardDisk"]}
LEASE = {"state": "bound", "vm_uuid": "v1", "l3_uuid": "l1", "mac": "fa:16:3e:00:00:01", "ip": "198.18.0.5"}


def event(seq: int, kind: str = "vm", ident: str = "v1", body: dict[str, Any] | None = None) -> ObservedEvent:
    return ObservedEvent(seq=seq, kind=kind, id=ident, body=VM if body is None else body, at=1.0)


def test_what_the_agents_report_passes():
    check(ObservedBatch(events=[event(1), event(2, "lease", "n1", LEASE), event(3, body={"state": "Destroyed"}),
                                event(4, body={**VM, "drift": True, "generation": 3, "error": "x"}),
                                event(5, body={**VM, "reboot_seq": 2, "installed": True, "generation": 4})]))


@pytest.mark.parametrize("kind, body, field", [
    ("lease", {"state": "bound"}, "events.0.body.vm_uuid"),
    ("lease", {**LEASE, "ip": "198.18.0.256"}, "events.0.body.ip"),
    ("lease", {**LEASE, "mac": "not-a-mac"}, "events.0.body.mac"),
    ("vm", {**VM, "state": "Exploded"}, "events.0.body.state"),
    ("vm", {**VM, "console": {"protocol": "vnc", "kinds": ["rdp"]}}, "events.0.body.console.kinds.0"),
    ("vm", {**VM, "console": {"protocol": "rdp", "kinds": ["vnc"]}}, "events.0.body.console.protocol"),
    ("vm", {**VM, "generation": 1.5}, "events.0.body.generation"),
    ("vm", {**VM, "surprise": 1}, "events.0.body.surprise"),
    ("evil", {}, "events.0.kind"),
])
def test_a_body_that_could_not_be_read_back_is_refused_naming_it(kind, body, field):
    with pytest.raises(Invalid) as e:
        check(ObservedBatch(events=[event(1, kind, body=body)]))
    assert e.value.field == field and e.value.status == 400


class FailingOnce(MemoryStore):
    """Its next commit that writes `fail_on` fails as etcd's does when its leader changes (the API: 503)."""

    fail_on: str | None = None

    async def commit(self, txn: Txn) -> int | None:
        if any(op.WhichOneof("request") == "request_put" and op.request_put.key.decode() == self.fail_on
               for op in txn.ops):
            self.fail_on = None
            raise StoreUnavailable("etcd: leader changed")
        return await super().commit(txn)


async def test_a_follow_up_that_failed_after_its_events_were_stored_runs_when_they_are_sent_again():
    store, desired = FailingOnce(), keys.desired_for("h1", stream_key_vm("v1"))
    await store.put(keys.host("h1"), {"uuid": "h1"})
    await store.put(keys.vm_index("v1"), {"host": "h1"})
    await store.put(desired, VmSpec(uuid="v1", name="vm-1", generation=3).model_dump(mode="json"))
    drifted = ObservedBatch(events=[event(7, body={**VM, "state": "Stopped", "drift": True, "generation": 3})])
    store.fail_on = desired
    with pytest.raises(StoreUnavailable):  # the event is stored; adopting its state (drift policy) fails
        await ingest(store, "h1", drifted)
    assert await ingest(store, "h1", drifted) == 7  # the agent got no answer: it sends the event again
    spec = VmSpec.model_validate((await store.get(desired)).value)
    assert (spec.state, spec.generation) == ("Stopped", 4)
    assert await ingest(store, "h1", drifted) == 7  # once more: adopted once, not again
    assert VmSpec.model_validate((await store.get(desired)).value).generation == 4


async def test_a_step_followed_by_a_state_report_of_the_same_vm_in_one_batch_still_runs_its_follow_up():
    store, desired = MemoryStore(), keys.desired_for("h1", stream_key_vm("v1"))
    await store.put(keys.host("h1"), {"uuid": "h1"})
    await store.put(keys.vm_index("v1"), {"host": "h1"})
    await store.put(desired, VmSpec(uuid="v1", name="vm-1", generation=3).model_dump(mode="json"))
    batch = ObservedBatch(events=[event(7, body={**VM, "state": "Stopped", "drift": True, "generation": 3}),
                                  event(8, body={**VM, "state": "Stopped"})])
    assert await ingest(store, "h1", batch) == 8
    spec = VmSpec.model_validate((await store.get(desired)).value)
    assert (spec.state, spec.generation) == ("Stopped", 4)  # the drift was adopted
    assert (await store.get(keys.observed("vm", "v1"))).value["seq"] == 8  # the newest is the record


def naming(store: MemoryStore, ident: str) -> list[str]:
    return sorted(k for k in store.kv if ident in k)


@pytest.mark.parametrize("meanwhile", [False, True])
async def test_a_deleted_storage_keeps_no_report_on_it_nor_gets_one_back(meanwhile):
    store = await cloud("h1")
    await store.put(keys.file_storage(LOCAL.uuid), LOCAL.model_dump())
    assert await ingest(store, "h1", ObservedBatch(events=[event(1, "storage", "l1.h1", READY)])) == 1
    assert naming(store, "l1.") == [keys.observed("storage", "l1.h1")]
    late = ObservedBatch(events=[event(2, "storage", "l1.h1", READY)])
    if meanwhile:  # the delete lands between the intake's read and its commit
        store.meanwhile.append(Txn().delete(keys.file_storage("l1")).delete(keys.observed("storage", "l1."), True))
    else:
        await storages.delete(store, "local")
        assert naming(store, "l1") == []
    assert await ingest(store, "h1", late) == 2  # acknowledged: the agent does not send it again
    assert naming(store, "l1") == []


async def test_a_deleted_volume_keeps_no_report_on_it_nor_gets_one_back():
    store = await cloud("h1")
    await store.put(keys.file_storage(LOCAL.uuid), LOCAL.model_dump())
    await store.put(keys.observed("storage", "l1.h1"), {**READY, "capacity": {"total": 1 << 40}})
    rec = await volumes.create(store, "data", LOCAL, None, 1 << 30, "h1", HEARTBEAT_TIMEOUT)
    ready, gone = {"storage_uuid": "l1", "state": "Ready", "path": "/ps/v"}, {"storage_uuid": "l1", "state": "Deleted"}
    await ingest(store, "h1", ObservedBatch(events=[event(1, "volume", rec.uuid, ready),
                                                    event(2, "migration", rec.uuid, {"state": "Copying", "id": "m1"})]))
    assert len(naming(store, f"/hs/o/volume/{rec.uuid}") + naming(store, f"/hs/o/migration/{rec.uuid}")) == 2
    await volumes.delete(store, rec.uuid)
    assert [k for k in naming(store, rec.uuid) if k.startswith(keys.OBSERVED)] == []
    late = ObservedBatch(events=[event(3, "volume", rec.uuid, ready), event(4, "volume", rec.uuid, gone)])
    assert await ingest(store, "h1", late) == 4  # its files gone: its tombstone leaves the host's stream too
    assert naming(store, rec.uuid) == []


@pytest.mark.parametrize("meanwhile", [False, True])
async def test_what_a_host_reports_after_its_delete_is_acknowledged_and_not_stored(meanwhile):
    store = await cloud("h1")
    await store.put(keys.file_storage(LOCAL.uuid), LOCAL.model_dump())
    late = ObservedBatch(events=[event(1, "health", "h1", {"errors": {}}), event(2, "storage", "l1.h1", READY)])
    if meanwhile:  # the delete lands between the intake's read and its commit
        store.meanwhile.append(Txn().delete(keys.host("h1")))
    else:
        await hosts.delete(store, "kvm-h1")
    assert await ingest(store, "h1", late) == 2
    assert naming(store, "h1") == []


class DetachingFirst(MemoryStore):
    """The NIC `detach` names is detached just before the first commit that stores a lease (after the intake
    read that the NIC was the VM's), as a request on another replica would."""

    detach: tuple[str, str] | None = None

    async def commit(self, txn: Txn) -> int | None:
        if self.detach and any(p.key.startswith(keys.observed("lease", "").encode()) for p in txn.puts()):
            (vm_uuid, nic), self.detach = self.detach, None
            await vmnics.detach(self, vm_uuid, nic)
        return await super().commit(txn)


async def test_a_lease_reported_as_its_nic_is_detached_is_not_stored_after_the_detach():
    store = DetachingFirst()
    host = Host(uuid="h1", name="kvm-h1", address="198.18.0.2", kind="kvm", token_sha256="", created=0.0)
    await store.put(keys.host("h1"), host.record())
    priv = await network(store)
    spec = await vm(store, l3_network_uuids=[priv.uuid])
    nic = spec.nics[0]
    lease = {"state": "bound", "vm_uuid": spec.uuid, "l3_uuid": priv.uuid, "mac": nic.mac, "ip": nic.ip}
    assert await ingest(store, "h1", ObservedBatch(events=[event(1, "lease", nic.uuid, lease)])) == 1
    assert await store.get(keys.observed("lease", nic.uuid)) is not None
    store.detach = (spec.uuid, nic.uuid)
    assert await ingest(store, "h1", ObservedBatch(events=[event(2, "lease", nic.uuid, lease)])) == 2
    assert naming(store, nic.uuid) == []
