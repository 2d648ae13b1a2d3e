"""Observed records of deleted VMs are forgotten after `observed_retention`, never those of live VMs (real etcd)."""

from __future__ import annotations

import pytest

from coordinator.etcd import keys
from coordinator.etcd.store import Store
from coordinator.leader.observedgc import ObservedGC
from coordinator.settings import CoordinatorSettings

pytestmark = pytest.mark.real


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(etcd):
    s = Store(etcd.endpoint)
    await s.connect()
    yield s
    await s.delete(keys.ROOT, prefix=True)
    await s.close()


async def test_records_of_deleted_vms_go_after_the_retention_and_live_ones_stay(store):
    await store.put(keys.vm_index("live"), {"host": "h1"})
    for vm in ("live", "gone", "busy"):
        await store.put(keys.observed("vm", vm), {"state": "Destroyed" if vm != "live" else "Running", "at": 1.0})
    await store.put(keys.observed("lease", "nic-live"), {"state": "bound", "vm_uuid": "live", "at": 1.0})
    await store.put(keys.observed("lease", "nic-gone"), {"state": "released", "vm_uuid": "gone", "at": 1.0})
    clock = Clock()
    gc = ObservedGC(store, CoordinatorSettings(admin_token="a" * 24, observed_retention=300), clock)

    assert await gc.sweep() == 0  # orphans are only noted the first time
    clock.now += 200
    await store.put(keys.observed("vm", "busy"), {"state": "Destroyed", "at": 2.0})  # changed: counts afresh
    assert await gc.sweep() == 0
    clock.now += 150
    assert await gc.sweep() == 2
    remaining = {e.key for e in (await store.list(keys.OBSERVED))[0]}
    assert remaining == {keys.observed("vm", "live"), keys.observed("vm", "busy"), keys.observed("lease", "nic-live")}
    clock.now += 200
    assert await gc.sweep() == 1 and gc.removed == 3
    assert {e.key for e in (await store.list(keys.OBSERVED))[0]} == {keys.observed("vm", "live"),
                                                                      keys.observed("lease", "nic-live")}
