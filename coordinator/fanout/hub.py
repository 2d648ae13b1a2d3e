"""One etcd watch per replica, fanned out to every host stream (kube-apiserver's watch cache).

`run` lists the desired-state prefix once, then watches it from the listed revision; each revision is
applied to the cache (`DesiredState`), remembered (`History`) and routed to the subscribed streams of the
hosts it concerns (`views.route`). Nothing reads etcd per host: a stream starts from the cache with a
snapshot, or with the diff since the agent's revision while history covers it and the agent's revision
is of the cache's timeline (coordinator/etcd/timeline.py: after a restore, a revision from before it
names nothing the restored data went through). An agent may come with a revision this replica has not
seen yet (another replica served it), or from a restore this replica has not noticed yet: the stream
waits briefly for the watch, then lists again (once, for every waiting stream) so that the cache is at
least that recent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from coordinator.etcd import keys
from coordinator.etcd.store import Change, Listing, Store, StoreUnavailable
from coordinator.fanout import views
from coordinator.fanout.history import History
from coordinator.fanout.listwatch import list_and_watch
from coordinator.fanout.state import DesiredState
from coordinator.fanout.subscription import Subscription

log = logging.getLogger(__name__)
READY_TIMEOUT = 10.0  # a stream that opens before the first listing waits this long, then gets a 503
CATCH_UP = 1.0  # how long a stream waits for the watch to reach the agent's revision before a listing


class Fanout:
    def __init__(self, store: Store, buffer_bytes: int, history: int):
        self.store = store
        self.buffer_bytes = buffer_bytes
        self.state = DesiredState()
        self.history = History(history)
        self.cut_offs = 0
        self.listings = 0
        self._subs: dict[str, set[Subscription]] = {}
        self._closed = False
        self._ready = asyncio.Event()
        self._moved = asyncio.Event()  # replaced by a fresh one at every revision
        self._listing = asyncio.Lock()

    @property
    def rev(self) -> int:
        return self.state.rev

    @property
    def timeline(self) -> str:
        return self.state.timeline

    @property
    def streams(self) -> int:
        return sum(len(s) for s in self._subs.values())

    async def run(self) -> None:
        """Feed the cache for ever (`listwatch`), the watch given the cache's timeline: it ends when it finds
        etcd's data on another. A listing is applied as one diff (or, when etcd's data was restored, as a new
        start that ends every stream)."""
        await list_and_watch(self.store, keys.DESIRED, "desired-state", lambda: self._list(self.rev + 1),
                             lambda: (self.rev, self.timeline), self._watched)

    def _watched(self, batch: list[Change]) -> None:
        if batch[0].revision > self.rev:  # else a listing got there first
            self._apply(batch, batch[0].revision)

    async def _list(self, need: int, timeline: str | None = None) -> None:
        """Bring the cache to etcd's current revision by a listing, unless it reached `need` (and `timeline`,
        or a later one) or another listing ended while this one waited (one listing serves every stream
        waiting for it)."""
        listings = self.listings
        async with self._listing:
            reached = self.rev >= need and (timeline is None or self.timeline >= timeline)
            if (self._ready.is_set() and reached) or self.listings > listings:
                return
            seen = self.rev
            found = await self.store.listing(keys.DESIRED)
            self.listings += 1
            if not self._ready.is_set() or found.timeline != self.timeline or found.revision < seen:
                self._load(found, restored=self._ready.is_set())
            elif found.revision > self.rev:  # else the watch got there first
                self._apply(self.state.diff(found.entries, found.revision), found.revision)

    def _load(self, found: Listing, restored: bool) -> None:
        """A cache from scratch; `restored`: etcd's data was restored (on another timeline, or behind the
        cache), so every stream starts over and only agents of the new timeline resume. A restore without a
        new timeline (not made by `hs-ctl restore`) leaves every revision up to the one the cache had reached
        ambiguous: none of them is resumed from."""
        seen = self.rev
        if restored:
            log.warning("etcd's data was restored (timeline %r at revision %d; this replica had %r at %d): every "
                        "stream restarts", found.timeline, found.revision, self.timeline, seen)
            self._cut_all()
        same = restored and found.timeline == self.timeline
        self.state = DesiredState(found.timeline)
        self.state.apply(self.state.diff(found.entries, found.revision), found.revision)
        self.history.reset(max(found.revision, seen + 1) if same else found.revision)
        self._ready.set()
        self._advance()

    def _apply(self, batch: list[Change], rev: int) -> None:
        delta = self.state.apply(batch, rev)
        self.history.add(rev, delta.touches)
        for host, data in views.route(delta, self.state, self._subs):
            for sub in self._subs[host]:
                if not sub.offer(data):
                    self.cut_offs += 1
                    log.warning("stream of host %s cut off: more than %d bytes behind at revision %d; "
                                "its agent resumes", host, sub.limit, rev)
        self._advance()

    def close(self) -> None:
        """End every stream now and any opened from now on (this replica is shutting down): each ends as a
        stream ends, whole, and its agent resumes from its revision at once, where a stream the server
        cancelled after its shutdown timeout reached the agent truncated, seconds later."""
        self._closed = True
        self._cut_all()

    def _cut_all(self) -> None:
        for subs in self._subs.values():
            for sub in subs:
                sub.cut_off()

    def _advance(self) -> None:
        self._moved.set()
        self._moved = asyncio.Event()

    async def _reach(self, since: int, timeline: str) -> None:
        """Until the cache is loaded and at `since` or later (etcd may be behind it: then as far as it is), and
        on `timeline` or a later one."""
        try:
            await asyncio.wait_for(self._ready.wait(), READY_TIMEOUT)
        except TimeoutError:
            raise StoreUnavailable("the desired-state cache is not loaded yet") from None
        def behind() -> bool:  # a revision of another timeline says nothing of this one
            return self.timeline < timeline or (self.timeline == timeline and self.rev < since)
        deadline = time.monotonic() + CATCH_UP
        while behind() and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), deadline - time.monotonic())
        if behind():
            await self._list(since if self.timeline == timeline else 0, timeline)

    @contextlib.asynccontextmanager
    async def subscribe(self, host: str, since: int, timeline: str = "") -> AsyncIterator[Subscription]:
        """A subscription whose first line takes the agent from `since` (0: nothing) of `timeline` (what its
        last snapshot said) to the cache's revision: a diff on the cache's timeline, else a snapshot."""
        await self._reach(since, timeline)
        sub = Subscription(host, self.buffer_bytes)
        if self._closed:  # this replica is shutting down: the stream ends at once
            sub.cut_off()
        else:
            resume = timeline == self.timeline and 0 < since <= self.rev and self.history.covers(since)
            first = views.resume(self.state, self.history, host, since) if resume else views.snapshot(self.state, host)
            if first is not None:
                sub.offer(first)
        self._subs.setdefault(host, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subs[host]
            subs.discard(sub)
            if not subs:
                del self._subs[host]
