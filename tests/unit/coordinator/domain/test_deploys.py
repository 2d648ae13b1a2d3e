"""coordinator.domain.deploys: the deploy log a host keeps."""

from __future__ import annotations

from coordinator.domain import deploys
from coordinator.etcd import keys

from .cloud import cloud


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
