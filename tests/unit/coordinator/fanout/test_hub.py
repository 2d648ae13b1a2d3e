"""The fan-out hub against an in-memory stand-in for the store (the real one: tests/functional/coordinator/
test_fanout.py): a compacted watch lists again, an agent ahead of the replica is caught up by one listing
for all, a store that went back (a restore) ends every stream, and an agent resumes only on the timeline
of its revision."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from coordinator.etcd import timeline
from coordinator.etcd.errors import Rewound
from coordinator.etcd.store import Change, Compacted, Entry, Listing, StoreUnavailable
from coordinator.fanout import hub, listwatch
from coordinator.fanout.hub import Fanout


class MemoryStore:
    """Revisions, listings and prefix watches of a dict, with compaction and a watch that can fail."""

    def __init__(self) -> None:
        self.rev = 1
        self.kv: dict[str, object] = {}
        self.log: list[list[Change]] = []
        self.compacted = 0
        self.listings = 0
        self.fail_watch = 0  # the next watches that fail at once
        self.breaks = 0
        self._moved = asyncio.Event()

    def break_watches(self) -> None:
        """Every running watch fails (etcd went away)."""
        self.breaks += 1
        self._moved.set()
        self._moved = asyncio.Event()

    def write(self, *items: tuple[str, object | None]) -> int:
        self.rev += 1
        batch = [Change(k, v, self.rev) for k, v in items]
        self._apply(batch)
        self.log.append(batch)
        self._moved.set()
        self._moved = asyncio.Event()
        return self.rev

    def _apply(self, batch: list[Change]) -> None:
        for ch in batch:
            if ch.value is None:
                self.kv.pop(ch.key, None)
            else:
                self.kv[ch.key] = ch.value

    def restore(self, rev: int, sealed: str | None = None) -> None:
        """Back at `rev` with what was written until then, as after a restore from a backup taken then; as
        `hs-ctl restore` does it when `sealed` (a timeline id): written into the data first."""
        self.log = [b for b in self.log if b[0].revision <= rev]
        self.kv = {}
        for batch in self.log:
            self._apply(batch)
        self.rev = rev
        if sealed is not None:
            self.write((timeline.KEY, {"id": sealed}))

    @property
    def timeline(self) -> str:
        return timeline.of(self.kv.get(timeline.KEY))

    async def snapshot(self, prefixes: list[str]) -> tuple[dict[str, list[Entry]], int]:
        self.listings += 1
        await asyncio.sleep(0.01)
        items = sorted(self.kv.items())
        return {p: [Entry(k, v, 0, 0) for k, v in items if k.startswith(p)] for p in prefixes}, self.rev

    async def listing(self, prefix: str) -> Listing:
        snap, rev = await self.snapshot([prefix])
        return Listing(snap[prefix], rev, self.timeline)

    async def watch(self, prefix: str, start: int, on: str | None = None) -> AsyncIterator[list[Change]]:
        if self.fail_watch:
            self.fail_watch -= 1
            raise StoreUnavailable("etcd is down")
        if on is not None and on != self.timeline:
            raise Rewound(prefix, f"timeline {self.timeline!r}, the watch's {on!r}")
        if start <= self.compacted:
            raise Compacted(self.compacted + 1)
        breaks = self.breaks
        while True:
            if self.breaks > breaks:
                raise StoreUnavailable("etcd went away")
            for batch in [b for b in self.log if b[0].revision >= start]:
                start = batch[0].revision + 1
                mine = [ch for ch in batch if ch.key.startswith(prefix)]
                if mine:
                    yield mine
            await self._moved.wait()


@pytest.fixture
async def fanout(monkeypatch) -> AsyncIterator[tuple[MemoryStore, Fanout]]:
    monkeypatch.setattr(hub, "CATCH_UP", 0.05)
    monkeypatch.setattr(listwatch, "RETRY", 0.01)
    store = MemoryStore()
    store.write(("/hs/d/all/l3/a", {"uuid": "a"}))
    f = Fanout(store, buffer_bytes=1 << 20, history=1000)
    task = asyncio.create_task(f.run())
    try:
        yield store, f
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def lines(sub, n: int = 1) -> list[dict]:
    out: list[dict] = []
    while len(out) < n:
        data = await asyncio.wait_for(sub.next(5.0), 5.0)
        assert data is not None, "cut off"
        out.extend(json.loads(line) for line in data.splitlines())
    return out


async def until(cond) -> None:
    async with asyncio.timeout(5):
        while not cond():
            await asyncio.sleep(0.005)


async def test_a_stream_starts_with_a_snapshot_then_gets_each_change(fanout):
    store, f = fanout
    async with f.subscribe("h1", 0) as sub:
        (snap,) = await lines(sub)
        assert snap == {"type": "snapshot", "rev": 2, "items": {"l3/a": {"uuid": "a"}}}
        store.write(("/hs/d/all/l3/b", {"uuid": "b"}), ("/hs/o/vm/x", {}))
        assert await lines(sub) == [{"type": "changes", "rev": 3, "puts": {"l3/b": {"uuid": "b"}}, "deletes": []}]


async def test_a_watch_lists_again_after_a_store_failure_and_after_a_compaction(fanout):
    store, f = fanout
    async with f.subscribe("h1", 0) as sub:
        await lines(sub)
        store.break_watches()
        store.fail_watch = 1  # and the first retry fails too
        store.write(("/hs/d/all/l3/a", None))
        store.write(("/hs/d/all/l3/c", {"uuid": "c"}))
        store.compacted = 4  # meanwhile: the replica's next watch start (3) is gone
        got = await lines(sub)
    assert store.listings in (2, 3)  # the first, the one after the break (its diff is the line), and maybe
    # the one after the resume that failed
    assert got == [{"type": "changes", "rev": 4, "puts": {"l3/c": {"uuid": "c"}}, "deletes": ["l3/a"]}]
    assert f.state.common == {"l3/c": {"uuid": "c"}}


async def test_agents_ahead_of_the_replica_are_caught_up_by_one_listing(fanout):
    store, f = fanout
    await until(lambda: f.rev == 2)
    ahead = store.write(("/hs/alive/h1", {"at": 1}))  # not desired state: the watch says nothing of it
    listings = store.listings
    async with contextlib.AsyncExitStack() as stack:
        subs = await asyncio.gather(*(stack.enter_async_context(f.subscribe(f"h{i}", ahead)) for i in range(10)))
        assert f.rev == ahead and store.listings == listings + 1
        assert all(s.pending == 0 for s in subs)  # nothing changed since their revision: no first line


@contextlib.asynccontextmanager
async def streaming(store: MemoryStore, f: Fanout) -> AsyncIterator:
    """A host streaming from the cache at revision 3, where config/x was written (after a backup at 2)."""
    store.write(("/hs/d/all/config/x", 1))
    await until(lambda: f.rev == 3)
    async with f.subscribe("h1", 0) as sub:
        await lines(sub)
        yield sub


async def test_a_store_that_went_back_ends_every_stream(fanout):
    store, f = fanout
    async with streaming(store, f) as sub:
        store.restore(2)  # a restore from an older backup...
        listings = store.listings
        async with contextlib.AsyncExitStack() as stack:  # ...seen when agents come from the future
            late = await asyncio.gather(*(stack.enter_async_context(f.subscribe(f"h{i}", 4)) for i in range(2, 7)))
            assert [json.loads((await s.next(1.0)) or b"{}")["type"] for s in late] == ["snapshot"] * 5
        assert store.listings == listings + 1  # one listing for all of them, though etcd stays behind them
        assert await sub.next(1.0) is None and sub.cut
        assert f.rev == 2 and "config/x" not in f.state.common


async def test_a_watch_interrupted_by_a_restore_lists_again_and_ends_every_stream(fanout):
    """etcd restarted on older data: resuming the watch would wait for revisions the cache has seen."""
    store, f = fanout
    async with streaming(store, f) as sub:
        store.restore(2)
        listings = store.listings
        store.break_watches()  # etcd restarted on the restored data
        assert await sub.next(2.0) is None and sub.cut
        assert store.listings == listings + 1 and f.rev == 2 and "config/x" not in f.state.common
        store.write(("/hs/d/all/config/y", 2))  # revision 3 again: the watch goes on from the restored data
        await until(lambda: f.state.common.get("config/y") == 2)


async def test_a_restore_that_caught_up_with_the_cache_still_reaches_the_streams(fanout):
    """etcd restored, then written past the revision the cache had seen before the watch resumed: only a
    listing tells, and its difference reaches the agents as one change."""
    store, f = fanout
    async with streaming(store, f) as sub:
        store.restore(2)  # config/x was written after the backup...
        store.break_watches()
        store.write(("/hs/alive/h1", {"at": 1}))  # ...and the store's own writes since: revision 3, 4
        store.write(("/hs/alive/h1", {"at": 2}))
        assert await lines(sub) == [{"type": "changes", "rev": 4, "puts": {}, "deletes": ["config/x"]}]


@pytest.mark.parametrize("sealed", [None, "t1"])
async def test_an_agent_from_before_a_restore_gets_a_snapshot_though_etcd_passed_its_revision(fanout, sealed):
    """The restore found by the watch (etcd behind the cache, or on another timeline), then etcd's own writes
    past the agent's revision before it reconnects: that revision is ambiguous, with or without a timeline."""
    store, f = fanout
    async with streaming(store, f) as sub:
        since = f.rev
        store.restore(since - 1, sealed)  # config/x was written after the backup
        store.break_watches()
        assert await sub.next(2.0) is None and sub.cut
    store.write(("/hs/alive/h1", {"at": 1}))
    store.write(("/hs/alive/h1", {"at": 2}))
    assert store.rev > since
    async with f.subscribe("h1", since) as again:
        (snap,) = await lines(again)
    assert snap["type"] == "snapshot" and snap["items"] == {"l3/a": {"uuid": "a"}}, snap
    assert snap.get("timeline", "") == (sealed or "")


async def test_a_replica_started_after_a_restore_resumes_no_agent_from_before_it(fanout):
    """A replica (or a restarted one) that never saw the data before the restore: only the timeline tells."""
    store, f = fanout
    async with streaming(store, f):
        since = f.rev
    store.restore(since - 1, "t1")
    store.write(("/hs/alive/h1", {"at": 1}))
    fresh = Fanout(store, buffer_bytes=1 << 20, history=1000)
    task = asyncio.create_task(fresh.run())
    try:
        async with fresh.subscribe("h1", since) as sub:
            (snap,) = await lines(sub)
        assert snap == {"type": "snapshot", "rev": store.rev, "items": {"l3/a": {"uuid": "a"}}, "timeline": "t1"}
        async with fresh.subscribe("h1", store.rev, "t1") as sub:  # of the restored data: resumed
            store.write(("/hs/d/all/config/y", 2))
            assert await lines(sub) == [{"type": "changes", "rev": store.rev, "puts": {"config/y": 2},
                                         "deletes": []}]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_agent_from_a_restore_the_replica_has_not_noticed_yet_is_caught_up_by_a_listing(fanout):
    store, f = fanout
    await until(lambda: f.rev == 2)
    store.restore(2, "t1")  # the replica's watch has not reconnected yet
    async with f.subscribe("h1", store.rev, "t1") as sub:
        assert f.timeline == "t1" and sub.pending == 0  # nothing changed since its revision: no first line
