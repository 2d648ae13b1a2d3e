"""The compaction loop against a stand-in store: each compaction goes to the revision seen one interval
before, never backwards, and one already done by someone else is fine; after etcd's data is restored to an
older revision it goes on from there."""

from __future__ import annotations

import asyncio

from coordinator.leader.compaction import Compactor


class Revisions:
    """A store whose revision moves by 10 per read; `compact` records, and is a no-op at or below
    `floor` (compacted already), as the etcd driver's is."""

    def __init__(self, floor: int = 0) -> None:
        self.rev, self.floor = 100, floor
        self.compactions: list[int] = []

    async def revision(self) -> int:
        self.rev += 10
        return self.rev

    async def compact(self, revision: int) -> None:
        if revision > self.floor:
            self.compactions.append(revision)


async def test_each_compaction_keeps_one_interval_of_history():
    store = Revisions()
    task = asyncio.create_task(Compactor(store, 0.02).run())
    async with asyncio.timeout(5):  # a loop that stopped compacting fails here, not after pytest's 300 s
        while len(store.compactions) < 3 and not task.done():
            await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert store.compactions[:3] == [110, 120, 130]  # each the revision read one interval earlier


async def test_a_revision_compacted_already_is_not_an_error_and_never_goes_backwards():
    store = Revisions(floor=150)
    compactor = Compactor(store, 60)
    await compactor.compact(140)  # etcd's own auto-compaction went further: fine
    await compactor.compact(130)
    await compactor.compact(160)
    assert store.compactions == [160] and compactor.compacted == 160


async def test_compaction_goes_on_after_etcd_is_restored_to_an_older_revision():
    store = Revisions()
    store.rev = 100_000
    task = asyncio.create_task(Compactor(store, 0.02).run())  # `hs-ctl restore` restarts no replica
    async with asyncio.timeout(5):
        while not store.compactions and not task.done():
            await asyncio.sleep(0.01)
        store.rev = 100  # etcd restored from a backup: its revisions count from the backup's again
        while sum(r < 100_000 for r in store.compactions) < 2 and not task.done():
            await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    restored = [r for r in store.compactions if r < 100_000]
    assert restored[:2] == [110, 120] and max(store.compactions) <= 100_020  # none to a revision etcd lacks
