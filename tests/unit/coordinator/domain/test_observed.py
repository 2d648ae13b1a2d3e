"""The observed intake: each kind's body checked before it is stored; what an event changes besides its
record is done even when the request that stored it failed."""

from __future__ import annotations

from typing import Any

import pytest

from agentkit.errors import Invalid
from agentkit.model import ObservedBatch, ObservedEvent, VmSpec, stream_key_vm
from coordinator.domain.observed import check, ingest
from coordinator.etcd import keys
from coordinator.etcd.store import StoreUnavailable, Txn

from .memstore import MemoryStore

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
    await store.put(keys.vm_index("v1"), {"host": "h1"})
    await store.put(desired, VmSpec(uuid="v1", name="vm-1", generation=3).model_dump(mode="json"))
    batch = ObservedBatch(events=[event(7, body={**VM, "state": "Stopped", "drift": True, "generation": 3}),
                                  event(8, body={**VM, "state": "Stopped"})])
    assert await ingest(store, "h1", batch) == 8
    spec = VmSpec.model_validate((await store.get(desired)).value)
    assert (spec.state, spec.generation) == ("Stopped", 4)  # the drift was adopted
    assert (await store.get(keys.observed("vm", "v1"))).value["seq"] == 8  # the newest is the record
