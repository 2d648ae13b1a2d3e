"""Ceph hosts' liveness: their cephagents never dial the coordinator, so the elected replica asks them.

Every `heartbeat_interval` the leader calls `GET /health` on the cephagent of each ceph host
(`http://<address>:<cephagent_port>`, with `cephagent_token`). An answer counts as that host's
heartbeat, so ceph hosts are Connected or Disconnected like kvm hosts, and the version it reports
becomes the host's `agent_version`, which is what automatic deploys compare (autodeploy.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from cephagent.errors import CephAgentError
from coordinator import keys
from coordinator.ceph import Agents
from coordinator.http import ApiError
from coordinator.resources.hosts import update_host
from coordinator.settings import CoordinatorSettings
from coordinator.store import Store

log = logging.getLogger(__name__)


class CephHostWatch:
    def __init__(self, store: Store, settings: CoordinatorSettings):
        self.store, self.settings = store, settings

    async def run(self) -> None:
        if not self.settings.cephagent_token:
            log.info("cephagent_token is unset: ceph hosts are not watched")
            return
        while True:
            await self.tick()
            await asyncio.sleep(self.settings.heartbeat_interval)

    async def tick(self) -> None:
        entries, _ = await self.store.list(keys.HOSTS)
        hosts = [e.value for e in entries if e.value["kind"] == "ceph"]
        if not hosts:
            return
        timeout = min(self.settings.heartbeat_interval, 5.0)
        async with Agents(self.settings, timeout) as agents:
            answers = await asyncio.gather(*(agents.client(h["address"]).health() for h in hosts),
                                           return_exceptions=True)
        for host, answer in zip(hosts, answers, strict=True):
            if isinstance(answer, CephAgentError):
                continue
            if isinstance(answer, BaseException):
                raise answer
            await self._seen(host, answer.get("version") or "")

    async def _seen(self, host: dict, version: str) -> None:
        await self.store.put(keys.alive(host["uuid"]), {"at": time.time(), "replica": self.settings.replica_id})
        if host.get("agent_version") != version:
            try:
                await update_host(self.store, host["uuid"], lambda r: {**r, "agent_version": version})
            except ApiError:  # deleted meanwhile
                return
            log.info("ceph host %s runs cephagent %s", host["name"], version)
