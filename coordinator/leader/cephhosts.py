"""The elected replica's loop over ceph hosts' liveness (coordinator/domain/ceph/hosts.py): every
`heartbeat_interval` it asks each ceph host's cephagent, whose answer is that host's heartbeat."""

from __future__ import annotations

import asyncio
import logging

from coordinator.domain.ceph.hosts import CephHostLiveness

log = logging.getLogger(__name__)


class CephHostWatch(CephHostLiveness):
    async def run(self) -> None:
        if not self.enabled:
            log.info("cephagent_token is unset: ceph hosts are not watched")
            return
        while True:
            await self.check()
            await asyncio.sleep(self.settings.heartbeat_interval)
