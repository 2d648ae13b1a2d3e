"""The observed-record GC against the in-memory store: a deleted VM's records go once they sat unchanged for
`observed_retention` on the GC's own clock, and that clock is one no NTP step or `date -s` moves."""

from __future__ import annotations

import time

from agentkit.tls import TlsSettings
from coordinator.etcd import keys
from coordinator.etcd.store import Txn
from coordinator.leader.observedgc import ObservedGC
from coordinator.settings import CoordinatorSettings
from tests.unit.coordinator.domain.memstore import MemoryStore

SETTINGS = CoordinatorSettings(admin_token="a" * 24, observed_retention=600, tls=TlsSettings(plain_http=True))


async def test_a_deleted_vms_record_goes_once_unchanged_for_the_retention_on_a_clock_no_date_change_moves():
    store, now = MemoryStore(), [1000.0]
    await store.commit(Txn().put(keys.observed("vm", "gone"), {"state": "Destroyed"}))
    gc = ObservedGC(store, SETTINGS, clock=lambda: now[0])
    assert await gc.sweep() == 0  # first seen orphaned now
    now[0] += 599
    assert await gc.sweep() == 0
    now[0] += 1
    assert await gc.sweep() == 1 and await store.get(keys.observed("vm", "gone")) is None
    assert ObservedGC(store, SETTINGS).clock is time.monotonic  # a wall clock set a day ahead would forget at once
