"""The VM user's caps extended by many callers at once, on a real cluster: threads of one agent and two agents
(two connections) asking for different pools, each grant kept (a lost one leaves a pool's VMs without disks)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from cephagent.cluster import LOCK_NAME, LOCK_OBJECT, LOCK_POOL, CephCluster, pools_of
from cephagent.errors import ClusterUnavailable
from testbed.together import at_once

pytestmark = pytest.mark.real
AGENTS, THREADS, ROUNDS = 2, 4, 4  # 8 callers at once, each round a new pool each


@pytest.fixture
def other_agent(ceph) -> Iterator[CephCluster]:
    """A second cephagent's connection to the same cluster (every mon host runs one)."""
    c = CephCluster(str(ceph.conf), ceph.client)
    c.connect()
    yield c
    c.close()


def caps_of(ceph, client: str) -> tuple[set[str], set[str]]:
    return pools_of(json.loads(ceph.mon_command("auth get", entity=client))[0]["caps"]["osd"])


def secret_calls(agents: list[CephCluster], client: str, tag: str) -> list:
    """One call per caller (AGENTS x THREADS), threads of each agent taking turns, each for pools of its own."""
    return [lambda a=agents[i % AGENTS], i=i: a.secret(client, [f"{tag}-{i}"], [f"{tag}-ro-{i}"])
            for i in range(AGENTS * THREADS)]


def test_concurrent_creations_of_the_user_keep_every_pool(ceph, cluster, other_agent):
    """8 callers find no user: get-or-create with differing caps failed (EINVAL) for all but the first."""
    for rnd in range(ROUNDS):
        client = f"client.hsnewvm{rnd}"
        assert at_once(secret_calls([cluster, other_agent], client, "new")) == []
        rw, ro = caps_of(ceph, client)
        assert {f"new-{i}" for i in range(AGENTS * THREADS)} <= rw
        assert {f"new-ro-{i}" for i in range(AGENTS * THREADS)} <= ro


def test_concurrent_extensions_keep_every_pool(ceph, cluster, other_agent):
    """8 callers extend the user at a time: each wrote the union of what it read and its own pools, the last
    writer's union lacking the others'."""
    client = "client.hsextvm"
    cluster.secret(client, ["ext-first"], [])
    for rnd in range(ROUNDS):
        assert at_once(secret_calls([cluster, other_agent], client, f"ext{rnd}")) == []
        rw, ro = caps_of(ceph, client)
        for done in range(rnd + 1):
            assert {"ext-first"} | {f"ext{done}-{i}" for i in range(AGENTS * THREADS)} <= rw, f"round {rnd}"
            assert {f"ext{done}-ro-{i}" for i in range(AGENTS * THREADS)} <= ro, f"round {rnd}"
    # the agents met on HostStack's own pool, tagged so the cluster does not warn, and the lock is free again
    assert json.loads(ceph.mon_command("osd pool application get", pool=LOCK_POOL)) == {LOCK_POOL: {}}
    with cluster.ioctx(LOCK_POOL) as io:
        io.lock_exclusive(LOCK_OBJECT, LOCK_NAME, "test", duration=5)
        io.unlock(LOCK_OBJECT, LOCK_NAME, "test")


def test_a_dead_agents_lock_runs_out_and_a_lost_lease_is_seen(ceph, cluster, other_agent):
    """cls_lock's leases as the agents use them: one never released ends by itself, and renewing one that ran
    out fails (MUST_RENEW) once another agent took it, so an agent that took too long writes nothing more."""
    cluster.secret("client.hsleasevm", ["lease-a"], [])  # the lock pool made, whichever test ran first
    with other_agent.ioctx(LOCK_POOL) as io:
        io.lock_exclusive(LOCK_OBJECT, LOCK_NAME, "dead agent", "", 2)  # and never released
    started = time.monotonic()
    cluster.secret("client.hsleasevm", ["lease-b"], [])
    assert time.monotonic() - started > 1.5 and caps_of(ceph, "client.hsleasevm")[0] == {"lease-a", "lease-b"}
    quick = CephCluster(str(ceph.conf), ceph.client, timeout=1)  # a lease of 4 s
    quick.connect()
    try:
        with quick.cluster_lock() as renew:
            renew()
            time.sleep(4.2)
            cluster.secret("client.hsleasevm", ["lease-c"], [])  # took the lock that ran out, and let it go
            with pytest.raises(ClusterUnavailable, match="lost the lock on hoststack/vm-user-caps"):
                renew()
    finally:
        quick.close()
