"""Every host's agent credential, kept by one etcd watch per replica: authenticating an agent reads no
etcd, and an open stream ends as soon as its credential stops being valid (rotated, expired, or its host
deleted), not when the agent next reconnects.

At 1,000 hosts this is one watch on `/hs/host/` (host records change rarely: registration, an agent's
connect, a token rotation) and a dict; each open stream holds one entry that the watch, or a timer at the
credential's expiry, uses to end it. A credential the cache does not know or does not match is read from
etcd (a host registered a moment ago), so the cache never refuses what etcd accepts. What this replica
changes itself (a rotated or renewed token, a deleted host) it knows at once (`refresh`, `forget`), so
here an old token stops the moment its rotation is answered; each host's entry keeps the revision it is
of, and an older one never replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from coordinator.domain import hosts
from coordinator.domain.hosts import Host, token_hash
from coordinator.etcd import keys
from coordinator.etcd.store import Change, Entry, Store
from coordinator.fanout.listwatch import list_and_watch

log = logging.getLogger(__name__)
OnRevoked = Callable[[], None]


@dataclass(frozen=True)
class Credential:
    """A host's agent token as the coordinator keeps it: its digest and when it expires (None: never)."""

    sha256: str
    expires: float | None

    def valid(self, now: float) -> bool:
        return self.expires is None or now < self.expires


def accepted(value: object) -> tuple[Credential, ...]:
    """The credentials a host record (`value`) takes: its token's and, after a renewal, the previous one's
    until it expires (hosts.renew_token); none when the host is gone."""
    if not isinstance(value, dict):
        return ()
    host = Host.model_validate(value)
    current = Credential(host.token_sha256, host.token_expires)
    if host.previous_token_sha256 is None:
        return (current,)
    return current, Credential(host.previous_token_sha256, host.previous_token_expires)


def _match(credentials: tuple[Credential, ...], digest: str) -> Credential | None:
    return next((c for c in credentials if hmac.compare_digest(c.sha256, digest)), None)


@dataclass(eq=False)
class _Hold:
    credential: Credential
    on_revoked: OnRevoked
    timer: asyncio.TimerHandle | None = None


class HostCredentials:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time):
        self.store = store
        self.clock = clock
        self.revoked = 0  # streams ended because their credential did
        self._known: dict[str, tuple[Credential, ...]] = {}
        self._at: dict[str, int] = {}  # host -> the revision its entry is of
        self._holds: dict[str, set[_Hold]] = {}
        self._rev = 0
        self._timeline = ""  # of the listing the watch follows

    async def run(self) -> None:
        """Keep the cache for ever: list, then watch; after a failure, a compacted start or etcd's data found
        restored (behind, or on another timeline) it lists again, so a host the restore took away stops
        authenticating."""
        await list_and_watch(self.store, keys.HOSTS, "host credential", self._list,
                             lambda: (self._rev, self._timeline), self._apply)

    async def _list(self) -> None:
        found = await self.store.listing(keys.HOSTS)
        self._rev, self._timeline = found.revision, found.timeline
        self._load(found.entries)

    def _load(self, entries: list[Entry]) -> None:
        """A listing is the truth at its revision (after a restore, older than what was known)."""
        known = {e.key[len(keys.HOSTS):]: (accepted(e.value), e.mod_revision) for e in entries}
        self._at.clear()
        for host in set(self._known) | set(known):
            credentials, rev = known.get(host, ((), self._rev))
            self._set(host, credentials, rev)

    def _apply(self, batch: list[Change]) -> None:
        for ch in batch:
            self._rev = max(self._rev, ch.revision)
            self._set(ch.key[len(keys.HOSTS):], accepted(ch.value), ch.revision)

    async def refresh(self, ref: str) -> None:
        """This replica changed the credential of host `ref` (uuid or name): take it from etcd now."""
        host = await hosts.find(self.store, ref)
        entry = await self.store.get(keys.host(host.uuid))
        if entry is not None:
            self._set(host.uuid, accepted(entry.value), entry.mod_revision)

    def forget(self, host: str) -> None:
        """This replica deleted the host: its credential is void now (and for good: uuids are never reused)."""
        self._set(host, (), sys.maxsize)

    def _set(self, host: str, credentials: tuple[Credential, ...], rev: int) -> None:
        if rev < self._at.get(host, 0):
            return  # older than what is known (a watch event behind a refresh)
        self._at[host] = rev
        if not credentials:
            self._known.pop(host, None)
        else:
            self._known[host] = credentials
        for hold in list(self._holds.get(host, ())):
            if hold.credential not in credentials:
                self._revoke(host, hold, "it was replaced" if credentials else "its host was deleted")

    def _revoke(self, host: str, hold: _Hold, why: str) -> None:
        holds = self._holds.get(host)
        if holds is None or hold not in holds:
            return
        holds.discard(hold)
        if hold.timer is not None:
            hold.timer.cancel()
        self.revoked += 1
        log.info("host %s: an open stream ends: its credential is no longer valid (%s)", host, why)
        hold.on_revoked()

    async def authenticate(self, host: str, token: str) -> Credential | None:
        """The credential `token` is for `host`, if it is that host's valid one now."""
        digest = token_hash(token)
        credential = _match(self._known.get(host, ()), digest)
        if credential is None:
            entry = await self.store.get(keys.host(host))
            credential = _match(accepted(entry.value) if entry is not None else (), digest)
        return credential if credential is not None and credential.valid(self.clock()) else None

    async def whose(self, token: str) -> tuple[str, Credential] | None:
        """The host whose valid credential `token` is, and that credential (any host may present it)."""
        digest = token_hash(token)
        found = next(((h, c) for h, cs in self._known.items() if (c := _match(cs, digest)) is not None), None)
        if found is None and (host := await hosts.by_token(self.store, token)) is not None:
            found = host.uuid, Credential(host.token_sha256, host.token_expires)
        if found is None or not found[1].valid(self.clock()):
            return None
        return found

    @contextlib.contextmanager
    def hold(self, host: str, credential: Credential, on_revoked: OnRevoked) -> Iterator[None]:
        """Call `on_revoked` (once) when `credential` stops being `host`'s valid credential, while held."""
        hold = _Hold(credential, on_revoked)
        self._holds.setdefault(host, set()).add(hold)
        if credential.expires is not None:
            loop = asyncio.get_running_loop()
            delay = max(credential.expires - self.clock(), 0.0)
            hold.timer = loop.call_later(delay, self._revoke, host, hold, "it expired")
        known = self._known.get(host)
        if known is not None and credential not in known:  # replaced between authentication and now
            self._revoke(host, hold, "it was replaced")
        try:
            yield
        finally:
            if hold.timer is not None:
                hold.timer.cancel()
            holds = self._holds.get(host)
            if holds is not None:
                holds.discard(hold)
                if not holds:
                    del self._holds[host]
