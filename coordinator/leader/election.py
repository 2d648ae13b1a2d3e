"""Leader election from an etcd lease and a create-if-absent transaction.

Each replica tries to create `/hs/leader` bound to its own lease; the one that succeeds keeps the lease
alive and runs the background loops. The others watch the key and campaign the moment it goes: if the
leader dies, its lease expires within `ttl` seconds and another replica leads right after. A replica
that finds the key naming itself (it stepped down while etcd could not hear it revoke its lease, e.g.
during an etcd restart) revokes that lease and campaigns at once instead of waiting for it to expire.

Failures while leading:
- a store error (StoreUnavailable) in a loop restarts that loop after a pause; in the election itself
  (grant, commit, refresh) it makes the replica step down (revoke its lease, best effort) and campaign
  again. A lease whose refresh is not answered before it could have expired counts as lost: the
  replica steps down too, so its loops never outlive its lease by more than a moment. So does a won
  campaign whose commit answered so late that the lease could expire before its first refresh: no loop
  starts then.
- anything else is a bug: the replica stops its loops, revokes its lease so another replica takes over
  at once, and the exception leaves `run()`; the process's Supervisor then exits it non-zero.
`is_leader` is true only while the lease is known to be alive and every loop runs.

`eligible` (rolling upgrades, coordinator/domain/schema.py `may_lead`): a replica campaigns only while it
is eligible, and a leader that stops being eligible (a newer replica runs) steps down at its next refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable

from agentkit.supervise import together
from coordinator.etcd import keys
from coordinator.etcd.store import Compacted, Entry, Store, StoreUnavailable, Txn

log = logging.getLogger(__name__)
Loop = Callable[[], Awaitable[None]]
Eligible = Callable[[], Awaitable[bool]]


class LeaseLost(Exception):
    """etcd says the lease expired (or was revoked): someone else may lead now."""


class Outranked(Exception):
    """This replica may no longer lead (a newer one runs): it steps down for it."""


class Election:
    def __init__(self, store: Store, replica_id: str, ttl: float, loops: list[Loop], eligible: Eligible | None = None):
        self.store = store
        self.replica_id = replica_id
        self.ttl = ttl
        self.loops = loops
        self.eligible = eligible
        self.pause = min(1.0, ttl / 5)
        self._lease = 0
        self._valid_until = 0.0  # monotonic time before which the lease is certainly alive (0: not leading)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def is_leader(self) -> bool:
        """Holding a lease that cannot have expired yet, with none of the loops dead."""
        if time.monotonic() >= self._valid_until:
            return False
        return not any(t.done() and not t.cancelled() and t.exception() is not None for t in self._tasks)

    async def leader(self) -> str | None:
        """The replica the leader key names; never this one while it is not (or no longer) leading."""
        entry = await self.store.get(keys.LEADER)
        replica = _replica(entry) if entry else None
        if replica == self.replica_id and not self.is_leader:
            return None
        return replica

    async def run(self) -> None:
        """Campaign forever; while leader, run the loops. Only a bug ends this (after stepping down)."""
        while True:
            try:
                if not await self._may_lead():
                    await asyncio.sleep(self.pause)  # a newer replica runs, or the data is newer: look again
                    continue
                if await self._campaign():
                    await self._lead()
                continue  # another replica won the race: wait for its key to go
            except* StoreUnavailable as e:
                log.warning("election: %s; campaigning again", e.exceptions[0])
            except* LeaseLost:
                log.warning("leader lease lost; campaigning again")
            except* Outranked:
                log.info("a newer replica runs: stepping down for it")
            finally:
                await self._step_down()
            await asyncio.sleep(self.pause)

    async def _may_lead(self) -> bool:
        return self.eligible is None or await self.eligible()

    async def _campaign(self) -> bool:
        """Wait until no other replica holds the key, then try to create it; True when elected."""
        while (holder := await self.store.get(keys.LEADER)) is not None:
            if _replica(holder) == self.replica_id:
                log.info("the leader key names this replica, which does not lead: revoking its lease")
                await self.store.revoke(holder.lease)
            else:
                await self._await_vacancy(holder.mod_revision)
        asked = time.monotonic()  # etcd starts the lease's ttl after this
        self._lease = await self.store.grant(math.ceil(self.ttl))
        txn = Txn().absent(keys.LEADER).put(keys.LEADER, {"replica": self.replica_id, "at": time.time()},
                                            lease=self._lease)
        if await self.store.commit(txn) is None:
            return False
        if time.monotonic() + self.ttl / 3 >= asked + self.ttl:  # the commit answered late (it may take
            raise LeaseLost()  # etcd_timeout, past the ttl): the lease may not outlive the first refresh
        self._valid_until = asked + self.ttl
        log.info("elected leader", extra={"fields": {"replica": self.replica_id}})
        return True

    async def _await_vacancy(self, revision: int) -> None:
        """Until the leader key is deleted after `revision` (its lease expired or was revoked), or a
        lease's TTL passed (then the caller looks again)."""
        with contextlib.suppress(TimeoutError, Compacted):
            async with asyncio.timeout(self.ttl):
                async for batch in self.store.watch(keys.LEADER, revision + 1):
                    if any(ch.key == keys.LEADER and ch.value is None for ch in batch):
                        return

    async def _lead(self) -> None:
        """Run the loops and keep the lease until one of them fails or the lease is lost."""
        self._tasks = [asyncio.create_task(self._keep(loop)) for loop in self.loops]
        await together([*self._tasks, asyncio.create_task(self._hold())])

    async def _hold(self) -> None:
        """Refresh the lease every ttl/3; an answer that comes too late (or says expired) loses it."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            sent = time.monotonic()
            try:
                async with asyncio.timeout(self._valid_until - sent):
                    alive = await self.store.refresh(self._lease)
            except TimeoutError:
                raise LeaseLost() from None
            if not alive:
                raise LeaseLost()
            self._valid_until = sent + self.ttl
            if not await self._may_lead():
                raise Outranked()

    async def _keep(self, loop: Loop) -> None:
        """Run `loop`, again after a pause whenever the store fails it (a bug ends it, and the election)."""
        while True:
            try:
                return await loop()
            except StoreUnavailable as e:
                log.warning("leader loop %s: %s; restarting it", getattr(loop, "__qualname__", loop), e)
                await asyncio.sleep(self.pause)

    async def _step_down(self) -> None:
        """Stop counting as leader now, and give the lease back so another replica need not wait for it."""
        self._valid_until, self._tasks = 0.0, []
        lease, self._lease = self._lease, 0
        if lease:
            await self.store.revoke(lease)


def _replica(entry: Entry) -> str | None:
    replica = entry.value.get("replica") if isinstance(entry.value, dict) else None
    return replica if isinstance(replica, str) else None
