"""Image store hosts' liveness: their agents never dial the coordinator, so the coordinator asks them.

`GET /health` of every image store host at once; an answer is that host's heartbeat and its version
becomes the host's `agent_version` (what automatic deploys compare), as for ceph hosts.
"""

from __future__ import annotations

import asyncio
import logging

from coordinator.domain.hosts import Host, answered
from coordinator.domain.imagestore.agents import Stores
from coordinator.etcd import keys
from coordinator.etcd.store import Store
from coordinator.settings import CoordinatorSettings
from imagestore.errors import ImageStoreError

log = logging.getLogger(__name__)
MAX_TIMEOUT = 5.0


class ImageStoreLiveness:
    def __init__(self, store: Store, settings: CoordinatorSettings):
        self.store, self.settings = store, settings

    async def check(self) -> None:
        entries, _ = await self.store.list(keys.HOSTS)
        found = [(e, Host.model_validate(e.value)) for e in entries if isinstance(e.value, dict)
                 and e.value.get("kind") == "imagestore" and e.value.get("agent_secret")]
        if not found:
            return
        async with Stores(self.settings, min(self.settings.heartbeat_interval, MAX_TIMEOUT)) as stores:
            answers = await asyncio.gather(*(stores.client(h).health() for _, h in found), return_exceptions=True)
        for (entry, host), answer in zip(found, answers, strict=True):
            if isinstance(answer, ImageStoreError):
                continue
            if isinstance(answer, BaseException):
                raise answer
            if await answered(self.store, entry, answer.version, self.settings.replica_id):
                log.info("image store host %s runs imagestore %s", host.name, answer.version)
