"""The election's failure handling against a stand-in store: store errors never end it, bugs do (after
stepping down), and `is_leader` is never true without a live lease and live loops."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from coordinator.etcd import keys
from coordinator.etcd.store import Change, Entry, StoreUnavailable
from coordinator.leader.election import Election

TTL = 1


class FakeStore:
    """The calls Election makes: one leader key, leases that end only when revoked, a watch of the key."""

    def __init__(self) -> None:
        self.holder: int | None = None
        self.holder_name = "r1"
        self.released = asyncio.Event()
        self.granted = 0
        self.revoked: list[int] = []
        self.down = False  # every call fails with StoreUnavailable
        self.expired = False  # refresh answers "expired"
        self.hang = False  # etcd stops answering (but hears): every call from now on waits until `answer`
        self.answer = asyncio.Event()
        self.on_refresh = lambda: None  # what else happens as a refresh arrives
        self.slow_commits: list[float] = []  # seconds before each next commit is answered (it is applied at once)

    async def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("etcd is down")
        if self.hang:
            await self.answer.wait()

    async def grant(self, ttl: int) -> int:
        await self._check()
        self.granted += 1
        return self.granted

    async def commit(self, txn) -> int | None:
        await self._check()
        if self.holder is not None:
            return None
        self.holder = txn.ops[0].request_put.lease
        await asyncio.sleep(self.slow_commits.pop(0) if self.slow_commits else 0.0)
        return 1

    async def refresh(self, lease: int) -> bool:
        self.on_refresh()
        await self._check()
        return lease == self.holder and not self.expired

    async def revoke(self, lease: int) -> None:
        self.revoked.append(lease)
        if self.holder == lease:
            self.release()

    def release(self) -> None:
        self.holder = None
        self.released.set()

    async def get(self, key: str) -> Entry | None:
        return Entry(keys.LEADER, {"replica": self.holder_name}, 1, 1, self.holder) if self.holder else None

    async def watch(self, prefix: str, start: int):
        await self.released.wait()
        self.released.clear()
        yield [Change(keys.LEADER, None, start)]


async def until(check, timeout: float = 3) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def at_once(check, turns: int = 20) -> None:
    """`check` holds within a few turns of the event loop, with no timer (a pause, a timeout) let run out:
    "at once" however slow the machine."""
    for _ in range(turns):
        if check():
            return
        await asyncio.sleep(0)
    assert check(), "not at once"


async def stopped(task: asyncio.Task) -> bool:
    """Cancel `task` and wait for it to end, boundedly: a run() that swallows its cancel is a hang."""
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=3)
    return task in done and task.cancelled()


@contextlib.asynccontextmanager
async def running(el: Election):
    task = asyncio.create_task(el.run())
    try:
        yield task
    finally:
        assert await stopped(task), "run() did not end when cancelled"


async def idle() -> None:
    await asyncio.Event().wait()


async def test_a_store_error_in_a_loop_restarts_the_loop_and_the_replica_keeps_leading():
    store, runs = FakeStore(), []

    async def flaky() -> None:
        runs.append(time.monotonic())
        if len(runs) < 3:
            raise StoreUnavailable("a read timed out")
        await idle()

    el = Election(store, "r1", TTL, [flaky])
    async with running(el) as task:
        await until(lambda: len(runs) == 3)
        assert el.is_leader and not task.done() and store.granted == 1 and store.revoked == []


async def test_a_bug_in_a_loop_makes_the_replica_resign_and_leaves_run():
    store = FakeStore()

    async def buggy() -> None:
        await asyncio.sleep(0.1)
        raise KeyError("a bug")

    el = Election(store, "r1", TTL, [buggy, idle])
    with pytest.raises(ExceptionGroup) as e:
        await asyncio.wait_for(el.run(), 3)
    assert [type(x) for x in e.value.exceptions] == [KeyError]
    assert store.revoked == [1] and store.holder is None and not el.is_leader


async def test_a_dead_loop_is_never_reported_as_leading():
    store, dead = FakeStore(), asyncio.Event()

    async def buggy() -> None:
        dead.set()
        raise KeyError("a bug")

    el = Election(store, "r1", TTL, [buggy, idle])
    task = asyncio.create_task(el.run())
    await dead.wait()
    await asyncio.sleep(0)  # the loop's task is done; the election has not handled it yet
    assert not el.is_leader
    with pytest.raises(ExceptionGroup):
        await asyncio.wait_for(task, 3)


async def test_an_expired_lease_means_stepping_down_and_campaigning_again():
    store = FakeStore()
    el = Election(store, "r1", TTL, [idle])
    async with running(el):
        await until(lambda: el.is_leader)
        store.expired = True
        await until(lambda: store.revoked == [1])
        assert not el.is_leader
        store.expired = False
        await until(lambda: el.is_leader)
        assert store.holder == 2


async def test_a_campaign_whose_commit_answers_too_late_starts_no_loop_and_campaigns_again():
    store, started = FakeStore(), []
    store.slow_commits = [TTL]  # an etcd request may take etcd_timeout (10 s), a lease lasts leader_ttl (5 s)

    async def loop() -> None:
        started.append(store.holder)
        await idle()

    el = Election(store, "r1", TTL, [loop])
    async with running(el):
        await until(lambda: store.revoked == [1])  # the lease that may have expired: given back
        assert 1 not in started  # no loop ran on it (another replica may lead by now)
        await until(lambda: el.is_leader)
        assert started == [2]


async def test_an_unanswered_refresh_ends_leadership_before_the_lease_can_expire():
    store = FakeStore()
    el = Election(store, "r1", TTL, [idle])
    async with running(el):
        await until(lambda: el.is_leader)
        store.hang = True
        await asyncio.sleep(TTL)  # every refresh sent since started unanswered: a lease could expire now
        assert not el.is_leader  # told by the clock, not by when this task got to run


async def test_a_cancel_that_comes_as_the_lease_is_lost_ends_run():
    store = FakeStore()
    el = Election(store, "r1", TTL, [idle])
    task = asyncio.create_task(el.run())
    await until(lambda: el.is_leader)
    store.on_refresh, store.expired = task.cancel, True  # the process stops just as etcd says "expired"
    done, _ = await asyncio.wait([task], timeout=3 * TTL)
    assert task in done and task.cancelled() and store.revoked == [1] and store.granted == 1


async def test_a_replica_that_lost_its_lease_waits_for_the_next_vacancy_as_long_as_it_takes():
    store = FakeStore()
    el = Election(store, "r1", TTL, [idle])
    async with running(el) as task:
        await until(lambda: el.is_leader)
        store.expired = True
        await until(lambda: store.revoked == [1])
        store.holder, store.holder_name, store.expired = 7, "r2", False  # r2 won the next campaign
        await asyncio.sleep(2.5 * TTL)  # longer than each watch for a vacancy lasts
        assert not task.done() and store.granted == 1
        store.release()
        await until(lambda: el.is_leader)


async def test_an_unreachable_store_never_ends_the_campaign():
    store = FakeStore()
    store.down = True
    el = Election(store, "r1", TTL, [idle])
    async with running(el) as task:
        await asyncio.sleep(0.5)
        assert not el.is_leader and not task.done()
        store.down = False
        await until(lambda: el.is_leader)


async def test_the_leader_is_who_holds_the_key_but_never_this_replica_while_not_leading():
    store = FakeStore()
    assert await Election(store, "r2", TTL, []).leader() is None
    store.holder = 7  # the key names r1, whose lease etcd has not let expire yet
    assert await Election(store, "r2", TTL, []).leader() == "r1"
    assert await Election(store, "r1", TTL, []).leader() is None  # r1 itself knows it does not lead


async def test_a_replica_steps_down_for_a_newer_one_and_does_not_campaign_while_it_runs():
    store, newer = FakeStore(), False

    async def eligible() -> bool:
        return not newer

    el = Election(store, "r1", TTL, [idle], eligible=eligible)
    async with running(el) as task:
        await until(lambda: el.is_leader)
        newer = True  # a replica that knows a newer schema registered
        await until(lambda: not el.is_leader and store.holder is None)  # at its next refresh: lease given back
        granted = store.granted
        await asyncio.sleep(3 * TTL / 3)
        assert store.granted == granted and not task.done()  # no campaign meanwhile
        newer = False
        await until(lambda: el.is_leader)


async def test_a_replica_finding_the_key_naming_itself_revokes_that_lease_and_leads_at_once():
    store = FakeStore()
    store.holder = 7  # r1 stepped down while etcd was away: its revoke never arrived
    el = Election(store, "r1", 30, [idle])  # waiting for the lease to expire would take 30 s
    async with running(el):
        await at_once(lambda: el.is_leader)
        assert store.revoked == [7] and store.holder == 1


async def test_another_replica_campaigns_the_moment_the_key_goes_and_grants_nothing_before():
    store = FakeStore()
    store.holder, store.holder_name = 7, "r2"
    el = Election(store, "r1", 30, [idle])
    async with running(el):
        await asyncio.sleep(0.3)
        assert not el.is_leader and store.granted == 0
        store.release()
        await at_once(lambda: el.is_leader)
        assert store.granted == 1
