"""The elected replica's loop over hosts whose agents never dial in: every `heartbeat_interval` it asks
each ceph host's cephagent (coordinator/domain/ceph/hosts.py) and each image store host's agent
(coordinator/domain/imagestore/hosts.py); an answer is that host's heartbeat."""

from __future__ import annotations

import asyncio
import logging

from coordinator.domain.ceph.hosts import CephHostLiveness
from coordinator.domain.imagestore.hosts import ImageStoreLiveness
from coordinator.etcd.store import Store
from coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)


class PolledHostWatch:
    def __init__(self, store: Store, settings: CoordinatorSettings):
        self.settings = settings
        self.ceph = CephHostLiveness(store, settings)
        self.stores = ImageStoreLiveness(store, settings)

    async def run(self) -> None:
        while True:
            await asyncio.gather(self.ceph.check(), self.stores.check())
            await asyncio.sleep(self.settings.heartbeat_interval)
