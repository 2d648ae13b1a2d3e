"""Leader election from an etcd lease and a create-if-absent transaction.

Each replica tries to create `/hs/leader` bound to its own lease; the one that succeeds keeps the lease
alive and runs the background loops. If it dies, the lease expires after `ttl` seconds, the key goes
with it and another replica takes over on its next try.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from coordinator.etcd import keys
from coordinator.etcd.store import Store, StoreUnavailable, Txn

log = logging.getLogger(__name__)
Loop = Callable[[], Awaitable[None]]


class Election:
    def __init__(self, store: Store, replica_id: str, ttl: int, loops: list[Loop]):
        self.store = store
        self.replica_id = replica_id
        self.ttl = ttl
        self.loops = loops
        self.is_leader = False
        self.since: float | None = None
        self._lease = 0

    async def leader(self) -> str | None:
        entry = await self.store.get(keys.LEADER)
        return entry.value.get("replica") if entry else None

    async def run(self) -> None:
        """Campaign forever; while leader, run the loops; step down when the lease is lost."""
        while True:
            try:
                if await self._campaign():
                    await self._lead()
            except StoreUnavailable as e:
                log.warning("election: %s", e)
            self.is_leader = False
            await asyncio.sleep(min(1.0, self.ttl / 5))

    async def _campaign(self) -> bool:
        self._lease = await self.store.grant(self.ttl)
        txn = Txn().absent(keys.LEADER).put(keys.LEADER, {"replica": self.replica_id, "at": time.time()},
                                            lease=self._lease)
        if await self.store.commit(txn) is None:
            await self.store.revoke(self._lease)
            return False
        self.is_leader, self.since = True, time.time()
        log.info("elected leader", extra={"fields": {"replica": self.replica_id}})
        return True

    async def _lead(self) -> None:
        tasks = [asyncio.create_task(loop()) for loop in self.loops]
        try:
            while True:
                await asyncio.sleep(self.ttl / 3)
                if not await self.store.refresh(self._lease):
                    log.warning("leader lease lost")
                    return
                for t in tasks:
                    if t.done() and t.exception():
                        raise t.exception()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    async def resign(self) -> None:
        if self.is_leader:
            await self.store.revoke(self._lease)
            self.is_leader = False
