"""Ceph hosts' liveness: their cephagents never dial the coordinator, so the coordinator asks them.

A check calls `GET /health` on the cephagent of each ceph host (`https://<address>:<cephagent_port>`,
with the host's own token, else `cephagent_token`; a host with neither yet is not asked). An answer
counts as that host's heartbeat, so ceph hosts are Connected or
Disconnected like kvm hosts, and the version it reports becomes the host's `agent_version`, which is
what automatic deploys compare (coordinator/leader/autodeploy.py), its session the host's `agent_session`
(what a deploy's wait compares). An answer that is not a cephagent's
(no version) is no answer: nothing an agent says may end the elected replica (a hostile or broken agent
would make every replica resign in turn); a bug of ours still does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from agentkit import SESSION_PATTERN
from cephagent.errors import CephAgentError
from coordinator.domain.ceph.agents import Agents
from coordinator.domain.hosts import answered
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store
from coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)
MAX_TIMEOUT = 5.0


class AgentHealth(BaseModel):
    """What of a cephagent's `/health` answer makes it that host's heartbeat."""

    version: str = Field(max_length=100)  # as long as a KVM agent's (agentkit.model): it is written to etcd
    session: str | None = Field(None, pattern=SESSION_PATTERN)  # agentkit.SESSION; None: an agent older than sessions


def _ceph_host(entry: Entry) -> dict[str, Any] | None:
    value = entry.value
    return value if isinstance(value, dict) and value.get("kind") == "ceph" else None


class CephHostLiveness:
    def __init__(self, store: Store, settings: CoordinatorSettings):
        self.store, self.settings = store, settings

    async def check(self) -> None:
        """Ask every ceph host's agent at once; record a heartbeat for each that answers."""
        entries, _ = await self.store.list(keys.HOSTS)
        hosts = [(e, h) for e in entries if (h := _ceph_host(e)) is not None]
        if not hosts:
            return
        async with Agents(self.settings, min(self.settings.heartbeat_interval, MAX_TIMEOUT), self.store) as agents:
            hosts = [(e, h) for e, h in hosts if agents.token(h["address"]) is not None]
            answers = await asyncio.gather(*(agents.client(h["address"]).health() for _, h in hosts),
                                           return_exceptions=True)
        for (entry, host), answer in zip(hosts, answers, strict=True):
            if isinstance(answer, CephAgentError):
                continue
            if isinstance(answer, BaseException):
                raise answer
            try:
                health = AgentHealth.model_validate(answer)
            except ValidationError:
                continue
            if await answered(self.store, entry, health.version, self.settings.replica_id, health.session):
                log.info("ceph host %s runs cephagent %s", host["name"], health.version)
