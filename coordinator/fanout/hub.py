"""One etcd watch per replica, fanned out to every host stream (kube-apiserver's watch cache).

`run` lists the desired-state prefix once, then watches it from the listed revision; each revision is
applied to the cache (`DesiredState`), remembered (`History`) and routed to the subscribed streams of the
hosts it concerns (`views.route`). Nothing reads etcd per host: a stream starts from the cache with a
snapshot, or with the diff since the agent's revision while history covers it. An agent may come with
a revision this replica has not seen yet (another replica served it): the stream waits briefly for the
watch, then lists again (once, for every waiting stream) so that the cache is at least that recent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from coordinator.etcd import keys
from coordinator.etcd.store import Change, Entry, Store, StoreUnavailable
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
        self._ready = asyncio.Event()
        self._moved = asyncio.Event()  # replaced by a fresh one at every revision
        self._listing = asyncio.Lock()

    @property
    def rev(self) -> int:
        return self.state.rev

    @property
    def streams(self) -> int:
        return sum(len(s) for s in self._subs.values())

    async def run(self) -> None:
        """Feed the cache for ever (`listwatch`). A listing is applied as one diff (or, when etcd went back,
        as a new start that ends every stream)."""
        await list_and_watch(self.store, keys.DESIRED, "desired-state", lambda: self._list(self.rev + 1),
                             lambda: self.rev, self._watched)

    def _watched(self, batch: list[Change]) -> None:
        if batch[0].revision > self.rev:  # else a listing got there first
            self._apply(batch, batch[0].revision)

    async def _list(self, need: int) -> None:
        """Bring the cache to etcd's current revision by a listing, unless it reached `need` or another listing
        ended while this one waited (one listing serves every stream waiting for it)."""
        listings = self.listings
        async with self._listing:
            if (self._ready.is_set() and self.rev >= need) or self.listings > listings:
                return
            seen = self.rev
            snap, rev = await self.store.snapshot([keys.DESIRED])
            self.listings += 1
            if not self._ready.is_set() or rev < seen:
                self._load(snap[keys.DESIRED], rev, restored=self._ready.is_set())
            elif rev > self.rev:  # else the watch got there first
                self._apply(self.state.diff(snap[keys.DESIRED], rev), rev)

    def _load(self, entries: list[Entry], rev: int, restored: bool) -> None:
        """A cache from scratch; `restored`: etcd went back (a restore), so every stream starts over."""
        if restored:
            log.warning("etcd is at revision %d, behind this replica's %d (restored?): every stream restarts",
                        rev, self.rev)
            for subs in self._subs.values():
                for sub in subs:
                    sub.cut_off()
        self.state = DesiredState()
        self.state.apply(self.state.diff(entries, rev), rev)
        self.history.reset(rev)
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

    def _advance(self) -> None:
        self._moved.set()
        self._moved = asyncio.Event()

    async def _reach(self, since: int) -> None:
        """Until the cache is loaded and at `since` or later (etcd may be behind it: then as far as it is)."""
        try:
            await asyncio.wait_for(self._ready.wait(), READY_TIMEOUT)
        except TimeoutError:
            raise StoreUnavailable("the desired-state cache is not loaded yet") from None
        deadline = time.monotonic() + CATCH_UP
        while self.rev < since and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), deadline - time.monotonic())
        if self.rev < since:
            await self._list(since)

    @contextlib.asynccontextmanager
    async def subscribe(self, host: str, since: int) -> AsyncIterator[Subscription]:
        """A subscription whose first line takes the agent from `since` (0: nothing) to the cache's revision."""
        await self._reach(since)
        sub = Subscription(host, self.buffer_bytes)
        if 0 < since <= self.rev and self.history.covers(since):
            first = views.resume(self.state, self.history, host, since)
        else:
            first = views.snapshot(self.state, host)
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
