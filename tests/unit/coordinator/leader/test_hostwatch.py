"""The elected replica's host watch against the in-memory store: connection transitions as recorded."""

from __future__ import annotations

import logging
import time

from agentkit.tls import TlsSettings
from coordinator.domain import hosts
from coordinator.etcd import keys
from coordinator.etcd.store import Txn
from coordinator.leader.hostwatch import HostWatch
from coordinator.settings import CoordinatorSettings
from tests.unit.coordinator.domain.memstore import MemoryStore

SETTINGS = CoordinatorSettings(admin_token="a" * 24, heartbeat_timeout=10, replica_id="r1",
                               tls=TlsSettings(plain_http=True))


async def test_a_heartbeat_stamped_far_ahead_by_a_replica_with_a_wrong_clock_keeps_no_host_connected(caplog):
    store = MemoryStore()
    host, _ = await hosts.register(store, SETTINGS, "kvm-1", "198.18.0.2", "kvm", None)
    await store.put(keys.alive(host.uuid), {"at": time.time() + 3600, "replica": "r2"})  # r2's clock: an hour ahead
    with caplog.at_level(logging.WARNING, "coordinator.leader.hostwatch"):
        await HostWatch(store, SETTINGS, "0.1.0").tick()
    state = await store.get(keys.host_state(host.uuid))
    assert state is not None and state.value["state"] == "Disconnected"  # not for the hour after its agent died
    assert "taken by replica r2, is stamped 3600 s ahead of this replica's clock" in caplog.text


async def test_a_host_deleted_after_the_watch_read_it_leaves_no_state_behind():
    store = MemoryStore()
    host, _ = await hosts.register(store, SETTINGS, "kvm-1", "198.18.0.2", "kvm", None)
    store.meanwhile.append(Txn().delete(keys.host(host.uuid)))  # another replica's hs host delete, before the write
    watch = HostWatch(store, SETTINGS, "0.1.0")
    await watch.tick()
    assert await store.get(keys.host_state(host.uuid)) is None and watch.transitions == 0
