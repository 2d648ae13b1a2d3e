"""coordinator.domain.deploys: the deploy log a host keeps, the deploy lock of a host and of its address."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from coordinator.domain import deploys, hosts
from coordinator.domain.errors import Locked
from coordinator.etcd import keys
from coordinator.settings import CoordinatorSettings

from .cloud import cloud
from .memstore import MemoryStore

SETTINGS = CoordinatorSettings(admin_token="t" * 24, secret_key=Fernet.generate_key().decode())


async def test_a_hosts_deploy_log_keeps_its_newest_entries_only():
    """Each deploy adds about 16 entries, and a host decides how often it is deployed (a version it reports is
    upgraded at once): without a bound its log grew in etcd until etcd refused every write."""
    store = await cloud("h1", "h2")
    await deploys.add_log(store, "h2", deploys.DeployLogEntry(host="kvm-h2", task="probe", phase="before"))
    for i in range(deploys.LOG_ENTRIES + 40):
        await deploys.add_log(store, "h1", deploys.DeployLogEntry(host="kvm-h1", task="probe", phase="after",
                                                                  message=f"deploy {i}"))
    entries = await deploys.read_log(store, "h1")
    assert [e.message for e in entries] == [f"deploy {i}" for i in range(40, deploys.LOG_ENTRIES + 40)]
    assert await store.count(keys.deploy_log("h1")) == deploys.LOG_ENTRIES
    assert len(await deploys.read_log(store, "h2")) == 1  # another host's is its own


async def test_a_deploy_to_an_address_waits_for_the_deploy_of_another_host_there():
    """A hypervisor's kvmagent and cephagent are deployed over one SSH: at once they raced on apt's lock and on
    ssh's master connection. The deploy lock is its address's too, however the address is spelt, and goes with
    its lease (released, or its deployer dead)."""
    store = MemoryStore()
    kvm, _ = await hosts.register(store, SETTINGS, "kvm-1", "fd00::1", "kvm", None)
    await hosts.register(store, SETTINGS, "mon-1", "FD00:0::1", "ceph", None)
    await hosts.register(store, SETTINGS, "kvm-2", "fd00::2", "kvm", None)
    held = await deploys.take_lock(store, "kvm-1", "alice@ops (pid 1)", 30)
    with pytest.raises(Locked, match=rf"^host kvm-1 \({kvm.uuid}\), at the address of host mon-1, is being deployed by "
                                     r"alice@ops \(pid 1\) \(for \d+ s\)$") as e:
        await deploys.take_lock(store, "mon-1", "the coordinator", 30)
    assert (e.value.status, e.value.code) == (409, "locked")
    with pytest.raises(Locked, match=r"^host kvm-1 is being deployed by alice@ops"):
        await deploys.take_lock(store, "kvm-1", "the coordinator", 30)
    other = await deploys.take_lock(store, "kvm-2", "the coordinator", 30)  # another address: no wait
    await deploys.release_lock(store, "kvm-1", held.lock)
    dead = await deploys.take_lock(store, "mon-1", "the coordinator", 30)
    with pytest.raises(Locked, match=r"^host mon-1 \(.*\), at the address of host kvm-1, is being deployed"):
        await deploys.take_lock(store, "kvm-1", "alice@ops (pid 2)", 30)
    await store.revoke(dead.lease)  # its deployer died: the lease expired
    await deploys.take_lock(store, "kvm-1", "alice@ops (pid 2)", 30)
    assert (await deploys.current_lock(store, "kvm-2")).lock == other.lock
