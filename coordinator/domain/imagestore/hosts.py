"""Image store hosts' liveness: their agents never dial the coordinator, so the coordinator asks them.

`GET /health` of every image store host at once; an answer is that host's heartbeat and its version
becomes the host's `agent_version` (what automatic deploys compare), its session the host's `agent_session`
(what a deploy's wait compares), as for ceph hosts. Nothing a store
answers, and no token that cannot be read, ends the elected replica (a hostile or misconfigured store
would make every replica resign in turn); a bug of ours still does.
"""

from __future__ import annotations

import asyncio
import logging

from coordinator.domain.errors import NotConfigured
from coordinator.domain.hosts import Host, answered
from coordinator.domain.imagestore.agents import Stores
from coordinator.etcd import keys
from coordinator.etcd.store import Store
from coordinator.settings import CoordinatorSettings
from imagestore.client import ImageStoreClient
from imagestore.errors import ImageStoreError

log = logging.getLogger(__name__)
MAX_TIMEOUT = 5.0


class ImageStoreLiveness:
    def __init__(self, store: Store, settings: CoordinatorSettings):
        self.store, self.settings = store, settings
        self._unasked: dict[str, str] = {}  # host uuid -> why it is not asked, as last logged

    async def check(self) -> None:
        """Ask every image store host's agent at once; record a heartbeat for each that answers. A host whose
        token cannot be read (secret_key unset, or rotated without the old key) is not asked, with a warning
        when that starts or its reason changes; a store that does not answer, or not as a store, is skipped."""
        entries, _ = await self.store.list(keys.HOSTS)
        found = [(e, Host.model_validate(e.value)) for e in entries if isinstance(e.value, dict)
                 and e.value.get("kind") == "imagestore" and e.value.get("agent_secret")]
        if not found:
            return
        async with Stores(self.settings, min(self.settings.heartbeat_interval, MAX_TIMEOUT)) as stores:
            asked = [(entry, host, client) for entry, host in found
                     if (client := self._client(stores, host)) is not None]
            answers = await asyncio.gather(*(client.health() for _, _, client in asked), return_exceptions=True)
        for (entry, host, _), answer in zip(asked, answers, strict=True):
            if isinstance(answer, ImageStoreError):
                continue
            if isinstance(answer, BaseException):
                raise answer
            if await answered(self.store, entry, answer.version, self.settings.replica_id, answer.session):
                log.info("image store host %s runs imagestore %s", host.name, answer.version)

    def _client(self, stores: Stores, host: Host) -> ImageStoreClient | None:
        try:
            client = stores.client(host)
        except NotConfigured as e:
            if self._unasked.get(host.uuid) != e.message:
                log.warning("image store host %s is not asked for its health: %s", host.name, e.message)
                self._unasked[host.uuid] = e.message
            return None
        self._unasked.pop(host.uuid, None)
        return client
