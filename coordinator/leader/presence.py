"""This replica's record `/hs/replica/<id>` (the schema it knows, its version), alive while it runs.

Bound to a lease of its own, refreshed every ttl/3: a replica that dies disappears within the ttl. The
election reads these records so that the newest replica leads during a rolling upgrade
(coordinator/domain/schema.py `may_lead`); `hs-ctl status` and operators see who runs what.
"""

from __future__ import annotations

import asyncio
import logging
import time

from coordinator.etcd import keys
from coordinator.etcd.store import Store, StoreUnavailable

log = logging.getLogger(__name__)


class Presence:
    def __init__(self, store: Store, replica: str, schema: int, version: str, ttl: int):
        self.store, self.replica, self.ttl = store, replica, ttl
        self.value = {"schema": schema, "version": version}

    async def run(self) -> None:
        """For ever: register, keep the lease alive, register again when it is lost or etcd failed."""
        while True:
            lease = 0
            try:
                lease = await self.store.grant(self.ttl)
                await self.store.put(keys.replica(self.replica), {**self.value, "since": time.time()}, lease)
                while await self._refreshed(lease):
                    pass
            except StoreUnavailable as e:
                log.warning("replica record: %s; registering again", e)
            finally:
                if lease:
                    await self.store.revoke(lease)
            await asyncio.sleep(min(1.0, self.ttl / 5))

    async def _refreshed(self, lease: int) -> bool:
        await asyncio.sleep(self.ttl / 3)
        return await self.store.refresh(lease)
