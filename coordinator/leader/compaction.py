"""Keeping etcd's history short (a loop of the elected replica): every `compact_interval` seconds it
compacts to the revision it saw one interval before.

etcd keeps every revision until compacted, and without compaction a guest that makes its host report
lease changes in a loop drives the database to its quota, which turns the whole control plane
read-only. History is what host streams resume from (`GET /v1/hosts/{uuid}/stream?since=`): an agent
that reconnects within an interval of its last revision resumes with the changes since; one that was
away longer asks for a compacted revision and gets a fresh snapshot (coordinator/domain/hostview.py),
which is correct, only larger. The same holds for the coordinator's own watches. Compaction frees space
inside etcd's database for reuse; it does not shrink the file (that is `etcdctl defrag`, which stalls
the member and is left to operators). With `compact_interval = 0` the loop is not run: for clusters
that run etcd with `--auto-compaction-retention` instead.
"""

from __future__ import annotations

import asyncio
import logging

from coordinator.etcd.store import Store

log = logging.getLogger(__name__)


class Compactor:
    def __init__(self, store: Store, interval: float):
        self.store = store
        self.interval = interval
        self.compacted = 0  # the last revision this replica compacted to

    async def run(self) -> None:
        previous = await self._revision()
        while True:
            await asyncio.sleep(self.interval)
            current = await self._revision()
            if current >= previous:  # else etcd was restored meanwhile: `previous` is of the data before
                await self.compact(previous)
            previous = current

    async def _revision(self) -> int:
        """etcd's revision now. One below what this replica compacted to means etcd's data was restored
        from a backup (`hs-ctl restore`, which restarts no replica): its revisions count again from the
        backup's, and compaction goes on from there rather than wait for them to pass the old ones."""
        revision = await self.store.revision()
        if revision < self.compacted:
            log.info("etcd's revision went back (its data was restored): compacting from there",
                     extra={"fields": {"revision": revision, "compacted": self.compacted}})
            self.compacted = 0
        return revision

    async def compact(self, revision: int) -> None:
        """Compact to `revision` unless this replica already did (someone else going further is fine)."""
        if revision <= self.compacted:
            return
        await self.store.compact(revision)  # compacting where someone else already did is no error
        log.info("etcd compacted", extra={"fields": {"revision": revision}})
        self.compacted = revision
