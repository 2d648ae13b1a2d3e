"""The agent's view of a real cluster: identity, mons, capacity, health, the pool rule, the VM secret."""

from __future__ import annotations

import base64
import json
import os
import time

import pytest
import rbd

from cephagent.cluster import CephCluster
from cephagent.errors import Conflict, PoolNotFound
from cephagent.fsid import check_same_fsid
from cephagent.monurl import ceph_mon_host
from cephagent.wire import PoolRequest

pytestmark = pytest.mark.real
MiB = 1 << 20


def wait_for(get, ok, timeout: float = 30):
    """Poll `get()` until `ok(value)`; capacity figures come from the mgr every second or so."""
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def test_info_reports_identity_mons_capacity_and_health(ceph, cluster):
    info = cluster.info()
    assert info.fsid == ceph.fsid
    assert [(m.name, m.addr, m.in_quorum) for m in info.mons] == [("a", ceph.mons["a"].addr, True)]
    assert info.mon_at("127.0.0.1", ceph.mons["a"].v1_port).name == "a"
    assert info.capacity.total == ceph.memstore_bytes
    assert 0 < info.capacity.available <= info.capacity.total
    assert info.health.status in ("HEALTH_OK", "HEALTH_WARN")


def test_named_pool_that_does_not_exist_fails_and_creates_nothing(cluster):
    before = cluster.rados.list_pools()
    with pytest.raises(PoolNotFound) as e:
        cluster.ensure_pool(PoolRequest(name="hsnosuchpool", must_exist=True))
    assert "'hsnosuchpool' does not exist" in str(e.value) and e.value.field == "name"
    assert cluster.rados.list_pools() == before


def test_pool_is_created_once_for_rbd_then_reused(cluster):
    assert cluster.ensure_pool(PoolRequest(name="hsfresh")).created
    assert not cluster.ensure_pool(PoolRequest(name="hsfresh")).created
    assert not cluster.ensure_pool(PoolRequest(name="hsfresh", must_exist=True)).created
    assert "rbd" in cluster.command("osd pool application get", pool="hsfresh")


def test_existing_pool_of_another_application_is_refused(ceph, cluster):
    ceph.mon_command("osd pool create", pool="hsfsdata", pg_num=8)
    ceph.mon_command("osd pool application enable", pool="hsfsdata", app="cephfs")
    with pytest.raises(Conflict, match="'hsfsdata' belongs to application.*cephfs"):
        cluster.ensure_pool(PoolRequest(name="hsfsdata", must_exist=True))


def test_capacity_follows_writes(cluster, pools):
    pool = pools[1]
    before = cluster.info()
    assert before.pool(pool).total > 0  # listed even before the mgr reports on the new pool
    with cluster.ioctx(pool) as io:
        rbd.RBD().create(io, "capacity", 64 * MiB)
        with rbd.Image(io, "capacity") as image:
            for off in range(0, 32 * MiB, 4 * MiB):
                image.write(os.urandom(4 * MiB), off)
    try:
        # pool and OSD figures lag apart; the cluster-wide `used` also moves with other tests' deletions
        # (memstore frees at once), so it is checked to grow, and the pool figures to grow by the data.
        after = wait_for(cluster.info, lambda i: i.pool(pool).stored >= before.pool(pool).stored + 32 * MiB
                         and i.capacity.used > before.capacity.used, timeout=60)
        assert after.pool(pool).stored >= before.pool(pool).stored + 32 * MiB
        assert after.pool(pool).objects >= before.pool(pool).objects + 8
        assert after.capacity.used > before.capacity.used
        assert after.pool(pool).available < before.pool(pool).available
    finally:
        with cluster.ioctx(pool) as io:
            rbd.RBD().remove(io, "capacity")


def test_second_mon_is_seen_added_and_removed(ceph, cluster):
    mon_b = ceph.add_mon("b")
    try:
        mons = {m.name: m for m in cluster.info().mons}
        assert set(mons) == {"a", "b"} and all(m.in_quorum for m in mons.values())
        assert mons["b"].addr == mon_b.addr
        # an agent that knows only mon b (as one installed on b's host would) sees the same cluster
        via_b = CephCluster(None, ceph.client, keyring=str(ceph.keyring),
                            mon_host=ceph_mon_host([("127.0.0.1", mon_b.v1_port)]), timeout=10)
        via_b.connect()
        try:
            answers = {ceph.mons["a"].addr: cluster.fsid(), mon_b.addr: via_b.fsid()}
        finally:
            via_b.close()
        assert check_same_fsid(answers) == ceph.fsid
    finally:
        ceph.remove_mon("b")
    assert [m.name for m in cluster.info().mons] == ["a"]


def test_secret_hands_out_a_vm_user_with_rbd_caps_on_the_named_pools_only(ceph, cluster):
    s = cluster.secret("client.hsvm", ["vms-a"], ["images"])
    assert (s.user, s.fsid, s.monitors) == ("hsvm", ceph.fsid, [ceph.mons["a"].addr])
    assert len(base64.b64decode(s.key)) > 16

    def caps() -> dict[str, str]:
        return json.loads(ceph.mon_command("auth get", entity="client.hsvm"))[0]["caps"]
    assert caps() == {"mon": "profile rbd", "osd": "profile rbd pool=vms-a, profile rbd-read-only pool=images"}
    assert cluster.secret("client.hsvm", ["vms-b"], []).key == s.key  # the same user, its caps extended
    assert caps()["osd"] == "profile rbd pool=vms-a, profile rbd pool=vms-b, profile rbd-read-only pool=images"
    ceph.mon_command("auth caps", entity="client.hsvm", caps=["mon", "allow *", "osd", "allow *"])
    cluster.secret("client.hsvm", ["vms-a"], [])  # widened by hand: narrowed back to what it needs
    assert caps() == {"mon": "profile rbd", "osd": "profile rbd pool=vms-a"}
