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
from coordinator.domain.ceph.storage import Agents
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store, Txn
from coordinator.settings import CoordinatorSettings

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
        hosts = [e for e in entries if e.value["kind"] == "ceph"]
        if not hosts:
            return
        timeout = min(self.settings.heartbeat_interval, 5.0)
        async with Agents(self.settings, timeout) as agents:
            answers = await asyncio.gather(*(agents.client(e.value["address"]).health() for e in hosts),
                                           return_exceptions=True)
        for entry, answer in zip(hosts, answers, strict=True):
            if isinstance(answer, CephAgentError):
                continue
            if isinstance(answer, BaseException):
                raise answer
            await self._seen(entry, answer.get("version") or "")

    async def _seen(self, entry: Entry, version: str) -> None:
        """The heartbeat, and the version when it changed, in one transaction: never Connected with a stale one."""
        host = entry.value
        txn = Txn().put(keys.alive(host["uuid"]), {"at": time.time(), "replica": self.settings.replica_id})
        if host.get("agent_version") != version:
            txn.unchanged(entry.key, entry.mod_revision).put(entry.key, {**host, "agent_version": version})
        if await self.store.commit(txn) is not None and host.get("agent_version") != version:
            log.info("ceph host %s runs cephagent %s", host["name"], version)
