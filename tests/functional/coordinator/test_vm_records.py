"""A VM's desired object read while it moves or goes (real etcd): readers see it where it is, never a 409."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from agentkit.errors import NotFound
from agentkit.model import VmSpec, stream_key_vm
from coordinator.domain import vmrecords
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store, Txn

pytestmark = pytest.mark.real
VM = "c0ffee00000040008000000000000001"


class Racing(Store):
    """Runs `between` once, right after the VM's index was read: a writer's commit in between the two reads."""

    between: Callable[[], Awaitable[object]] | None = None

    async def get(self, key: str) -> Entry | None:
        entry = await super().get(key)
        if key == keys.vm_index(VM) and (write := self.between) is not None:
            self.between = None
            await write()
        return entry


@pytest.fixture
async def store(etcd):
    s = Racing(etcd.endpoint)
    await s.connect()
    txn = Txn().put(keys.vm_index(VM), {"host": "h1"})
    await s.commit(txn.put(keys.desired_for("h1", stream_key_vm(VM)), VmSpec(uuid=VM, name="v").model_dump()))
    yield s
    await s.delete(keys.ROOT, prefix=True)
    await s.close()


async def test_a_vm_that_moved_between_the_reads_is_read_on_its_new_host(store):
    async def nothing(spec: VmSpec, txn: Txn) -> None:
        spec.name = "moved"

    store.between = lambda: vmrecords.update(store, VM, nothing, new_host="h2")
    host, spec, entry = await vmrecords.load(store, VM)
    assert (host, spec.name, entry.key) == ("h2", "moved", keys.desired_for("h2", stream_key_vm(VM)))


async def test_a_vm_deleted_between_the_reads_is_not_found(store):
    store.between = lambda: store.commit(Txn().delete(keys.vm_index(VM))
                                         .delete(keys.desired_for("h1", stream_key_vm(VM))))
    with pytest.raises(NotFound):
        await vmrecords.load(store, VM)
