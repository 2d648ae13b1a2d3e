"""The store driver against a 3-member cluster with client TLS (client certificates required) and etcd
auth on: everything works with the right credentials, a forgotten token is replaced without a failed
request (also one an etcd restored from a backup would hold until the request's deadline), members
found through DNS SRV records work alike, and wrong credentials fail fast and clearly."""

from __future__ import annotations

import asyncio
import time

import pytest

from coordinator.etcd.endpoints import TlsFiles
from coordinator.etcd.store import EtcdConfig, Store, StoreUnavailable, Txn
from testbed.etcd import ROOT_PASSWORD, EtcdCluster
from testbed.srvzone import SrvZone

pytestmark = pytest.mark.real
TOKEN_TTL = 2


@pytest.fixture(scope="module")
def cluster(run):
    c = EtcdCluster(run, 3, name="sec", tls=True, auth=True, token_ttl=TOKEN_TTL).start()
    yield c
    c.stop()


async def roundtrip(config: EtcdConfig, prefix: str) -> None:
    s = Store(config)
    await s.connect()
    try:
        rev = await s.put(prefix + "a", {"n": 1})
        got: list[object] = []

        async def follow() -> None:
            async for batch in s.watch(prefix, rev):
                got.extend(ch.value for ch in batch)
        watcher = asyncio.create_task(follow())
        lease = await s.grant(5)
        assert await s.commit(Txn().absent(prefix + "b").put(prefix + "b", 2, lease=lease)) is not None
        assert await s.refresh(lease)
        entries, _ = await s.list(prefix)
        assert [e.value for e in entries] == [{"n": 1}, 2]
        got_many = await s.get_many([prefix + "b", prefix + "none", prefix + "a"])  # one request, one revision
        assert [e.value if e else None for e in got_many] == [2, None, {"n": 1}]
        await s.revoke(lease)
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        watcher.cancel()
        assert got == [{"n": 1}, 2, None]
    finally:
        await s.close()


async def test_tls_and_auth_with_the_right_credentials(cluster):
    assert all(e.startswith("https://") for e in cluster.endpoints)
    await roundtrip(cluster.config(), "/sec/direct/")


async def test_an_expired_token_is_replaced_without_a_failed_request(cluster):
    s = Store(cluster.config(timeout=3))
    await s.connect()
    try:
        await s.put("/sec/t", 1)
        await asyncio.sleep(TOKEN_TTL + 1.5)  # etcd forgets a simple token unused for its TTL
        assert (await s.get("/sec/t")) is not None
    finally:
        await s.close()


async def test_a_token_from_before_a_restore_is_replaced(run):
    """etcd 3.4 restored from a backup does not refuse a token issued at a raft index it has not reached
    yet: it holds the request until its deadline (a watch for good), so a coordinator that kept its token
    heard nothing from the restored etcd for as long as nobody else wrote to it."""
    c = EtcdCluster(run, 1, name="rst", auth=True).start()
    root = f"root:{ROOT_PASSWORD}"
    try:
        c.etcdctl("put", "/rst/in-the-backup", "1", user=root)
        backup = run.path("rst-backup.db")
        c.etcdctl("snapshot", "save", str(backup), user=root)
        s = Store(c.config(timeout=5, attempt_timeout=1))
        await s.connect()
        try:
            await s.put("/rst/after-the-backup", 2)  # authenticated at a raft index beyond the backup's
            c.members[0].restore(backup)
            changes = s.watch("/rst/", 1)  # a watch is held, never refused: no race with a deadline
            first = await anext(changes)
            await changes.aclose()
            assert [(ch.key, ch.value) for ch in first] == [("/rst/in-the-backup", 1)]
            assert await s.get("/rst/after-the-backup") is None
        finally:
            await s.close()
    finally:
        c.stop()


async def test_members_found_through_srv_records(cluster):
    records = {"_etcd-client-ssl._tcp.hs.test": [(0, 0, m.port, "localhost.") for m in cluster.members]}
    with SrvZone(records) as zone:
        config = cluster.config().replace(endpoints=(), discovery_srv="hs.test", nameservers=(zone.nameserver,))
        await roundtrip(config, "/sec/srv/")


@pytest.mark.parametrize("what", ["password", "client certificate", "CA"])
async def test_wrong_credentials_fail_fast_and_say_so(cluster, run, what):
    good = cluster.config(timeout=4)
    if what == "password":
        bad = good.replace(password="not-the-password")
        expect = "authentication failed"
    elif what == "client certificate":
        bad = good.replace(tls=TlsFiles(ca=good.tls.ca))
        expect = "no member answered"  # the TLS handshake fails: indistinguishable from a dead member
    else:
        from testbed.certs import TestCA
        bad = good.replace(tls=good.tls._replace(ca=TestCA(run.path("other-ca")).ca))
        expect = "no member answered"
    s = Store(bad)
    await s.connect()
    try:
        t = time.monotonic()
        with pytest.raises(StoreUnavailable, match=expect):
            await s.get("/sec/a")
        assert time.monotonic() - t < 5
    finally:
        await s.close()
