"""The store driver on a real 3-member etcd cluster while members die (kill -9), hang (SIGSTOP) or lose
requests and answers (a relay that drops one direction): reads, writes, watches and leases go on through
another member, each request within its deadline, and a transaction is applied once or reported as
not applied, never both."""

from __future__ import annotations

import asyncio
import time

import pytest

from coordinator.etcd.store import EtcdConfig, Store, StoreUnavailable, Txn
from testbed.blackhole import Blackhole
from testbed.etcd import EtcdCluster

pytestmark = pytest.mark.real
ATTEMPT = 1.0


@pytest.fixture(scope="module")
def cluster(run):
    c = EtcdCluster(run, 3, name="fo").start()
    yield c
    c.stop()


@pytest.fixture
async def store(cluster):
    s = Store(cluster.config(attempt_timeout=ATTEMPT, spread=False))
    await s.connect()
    yield s
    await s.close()


async def through(relay: Blackhole, cluster: EtcdCluster) -> Store:
    """A store whose first member is reached through `relay`, its connection up."""
    s = Store(EtcdConfig.of([relay.endpoint, *cluster.endpoints[1:]], attempt_timeout=ATTEMPT, spread=False))
    await s.connect()
    await s.get("/fo/warm")
    return s


async def collect(store: Store, prefix: str, start: int, into: list[int]) -> None:
    async for batch in store.watch(prefix, start):
        into.extend(ch.value for ch in batch)  # type: ignore[misc]


@pytest.mark.parametrize("victim", ["leader", "follower"])
async def test_a_killed_member_costs_no_request_and_no_watched_change(cluster, store, victim):
    prefix = f"/fo/kill-{victim}/"
    start = await store.put(prefix + "0", 0)
    seen: list[int] = []
    watcher = asyncio.create_task(collect(store, prefix, start, seen))
    member = cluster.leader() if victim == "leader" else next(m for m in cluster.members if m is not cluster.leader())
    slowest = 0.0

    async def writer(w: int) -> None:
        nonlocal slowest
        for i in range(1, 31):
            t = time.monotonic()
            await store.put(f"{prefix}{w * 100 + i}", w * 100 + i)
            assert await store.get(f"{prefix}{w * 100 + i}") is not None
            slowest = max(slowest, time.monotonic() - t)
            if w == 0 and i == 10:
                member.kill()
    try:
        await asyncio.gather(*(writer(w) for w in range(4)))
        entries, _ = await store.list(prefix)
        assert len(entries) == 121
        deadline = time.monotonic() + 10
        while len(seen) < 121 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert sorted(seen) == sorted(e.value for e in entries)  # every change once, none lost
        print(f"killed the {victim}: slowest write+read {slowest:.2f} s")
        assert slowest < 8
    finally:
        watcher.cancel()
        member.launch()
        member.wait_healthy()


@pytest.fixture
async def follower_first(cluster):
    """A store whose requests go to a follower first (a hung leader costs an election on top of the
    attempt: etcd's, bounded by the killed-leader test) and that follower."""
    leader = cluster.leader()
    first = next(m for m in cluster.members if m is not leader)
    endpoints = [first.endpoint, *(m.endpoint for m in cluster.members if m is not first)]
    s = Store(EtcdConfig.of(endpoints, attempt_timeout=ATTEMPT, spread=False))
    await s.connect()
    yield s, first
    await s.close()


async def test_a_hung_member_costs_one_attempt_not_the_request(follower_first):
    store, first = follower_first
    rev = await store.put("/fo/hang/a", 1)
    seen: list[int] = []
    watcher = asyncio.create_task(collect(store, "/fo/hang/", rev + 1, seen))
    await asyncio.sleep(0.2)
    first.pause()
    try:
        t = time.monotonic()
        await store.put("/fo/hang/b", 2)
        took = time.monotonic() - t
        assert took < ATTEMPT + 1.5, took
        for i in range(3, 13):  # the hung member is avoided now: no request goes to it again
            assert first.endpoint not in store.members[0], store.members
            await store.put(f"/fo/hang/{i}", i)
        deadline = time.monotonic() + 15
        while len(seen) < 11 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert seen == list(range(2, 13))
        print(f"hung member: first write {took:.2f} s")
    finally:
        first.resume()
        watcher.cancel()


async def test_a_lease_and_its_refresh_survive_the_loss_of_a_member(cluster, store):
    lease = await store.grant(3)
    await store.put("/fo/lease/k", "held", lease=lease)
    victim = cluster.member(store.members[0])
    victim.kill()
    try:
        for _ in range(8):  # 6 s: twice the TTL
            assert await store.refresh(lease)
            await asyncio.sleep(0.75)
        assert (await store.get("/fo/lease/k")) is not None
        await store.revoke(lease)
        assert await store.get("/fo/lease/k") is None
        assert not await store.refresh(lease)
    finally:
        victim.launch()
        victim.wait_healthy()


async def test_a_transaction_whose_answer_is_lost_is_found_committed_once(cluster):
    async with Blackhole(cluster.members[0].port) as relay:
        s = await through(relay, cluster)
        try:
            relay.drop_answers = True
            rev = await s.commit(Txn().absent("/fo/lost-answer").put("/fo/lost-answer", "once"))
            entry = await s.get("/fo/lost-answer")
            assert rev is not None and entry is not None
            assert entry.value == "once" and entry.create_revision == entry.mod_revision == rev
        finally:
            await s.close()


async def test_a_lost_request_is_sent_again_and_a_real_compare_failure_stays_one(cluster, store):
    await store.put("/fo/guard", 1)
    guard = await store.get("/fo/guard")
    assert guard is not None
    async with Blackhole(cluster.members[0].port) as relay:
        s = await through(relay, cluster)
        try:
            relay.drop_requests = True
            assert await s.commit(Txn().absent("/fo/lost-request").put("/fo/lost-request", 1)) is not None
            relay.drop_requests = False
            await s.close()
            s = await through(relay, cluster)  # the first member trusted again
            relay.drop_requests = True
            txn = Txn().unchanged("/fo/guard", guard.mod_revision).put("/fo/guarded", "mine")
            pending = asyncio.create_task(s.commit(txn))
            await asyncio.sleep(ATTEMPT / 2)
            await store.put("/fo/guard", 2)  # another writer wins while the first attempt is lost
            assert await pending is None
            assert await store.get("/fo/guarded") is None
        finally:
            await s.close()


async def test_with_no_member_left_a_request_fails_within_its_deadline():
    s = Store(EtcdConfig.of("127.0.0.1:9,127.0.0.1:10", timeout=2, attempt_timeout=0.5))
    await s.connect()
    try:
        t = time.monotonic()
        with pytest.raises(StoreUnavailable, match="no member answered within 2 s"):
            await s.get("/x")
        assert time.monotonic() - t < 2.5
    finally:
        await s.close()
