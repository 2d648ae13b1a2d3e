"""Background work of the elected replica: host connection transitions and their follow-ups.

Runs on one replica at a time (see election.py). Every tick, each host that needs its agent deployed is handed
to the deployer (autodeploy.py), whose `request` must be cheap: it decides whether to deploy now; then it is
told which hosts exist (`retain`), so that it forgets the deleted ones. A host needs it when it is Connected
with another agent version than the coordinator's, or when it was registered with SSH credentials and its
agent never connected. Level-triggered on purpose: a host that reconnects faster than the heartbeat timeout
never shows a transition, nor do hosts that stayed connected while the coordinator was upgraded, or hosts a
new leader inherits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from coordinator.domain.hosts import Host, HostState, beat_of, state_of
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store, Txn
from coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)


class Deploys(Protocol):
    """What HostWatch asks of the deployer (autodeploy.AutoDeployer)."""

    async def request(self, host: Host) -> None:
        """`host` needs its agent deployed (asked every tick while it does)."""

    def retain(self, hosts: set[str]) -> None:
        """These (uuids) are all the hosts there are."""


class HostWatch:
    """Records Connected/Disconnected transitions in `/hs/hoststate/<uuid>` and asks for agent deploys."""

    def __init__(self, store: Store, settings: CoordinatorSettings, version: str,
                 deploys: Deploys | None = None):
        self.store, self.settings, self.version, self.deploys = store, settings, version, deploys
        self.transitions = 0

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(1.0)

    async def tick(self) -> None:
        snap, _ = await self.store.snapshot([keys.HOSTS, keys.ALIVE, keys.HOST_STATE])
        alive = {e.key[len(keys.ALIVE):]: e.value for e in snap[keys.ALIVE]}
        known = {e.key[len(keys.HOST_STATE):]: e.value for e in snap[keys.HOST_STATE]}
        now = time.time()
        for e in snap[keys.HOSTS]:
            host = Host.model_validate(e.value)
            beat = beat_of(alive.get(host.uuid))
            state = state_of(beat, self.settings.heartbeat_timeout, now)
            seen = known.get(host.uuid)
            if (not isinstance(seen, dict) or seen.get("state") != state) and await self._record(e, state, now):
                self.transitions += 1
                log.info("host %s is %s", host.name, state)
                if beat is not None and beat - now >= self.settings.heartbeat_timeout:
                    log.warning("host %s: its last heartbeat, taken by replica %s, is stamped %.0f s ahead of this "
                                "replica's clock: one of the two clocks is off (replicas' clocks must agree within "
                                "heartbeat_timeout)", host.name, _replica(alive.get(host.uuid)), beat - now)
            if self.deploys and self.needs_agent(host, state):
                await self.deploys.request(host)
        if self.deploys:
            self.deploys.retain({e.key[len(keys.HOSTS):] for e in snap[keys.HOSTS]})

    async def _record(self, entry: Entry, state: HostState, now: float) -> bool:
        """Record the host's new state, guarded on its record as read: a host deleted since leaves none behind
        (one changed since is judged again at the next tick). False when it was not recorded."""
        record = {"state": state, "since": now, "replica": self.settings.replica_id}
        uuid = entry.key[len(keys.HOSTS):]
        txn = Txn().unchanged(entry.key, entry.mod_revision).put(keys.host_state(uuid), record)
        return await self.store.commit(txn) is not None

    def needs_agent(self, host: Host, state: HostState) -> bool:
        """An old agent is connected, or a host registered with SSH credentials never saw its agent connect."""
        if state == "Connected":
            return host.agent_version not in (None, "", self.version)
        return host.agent_version is None and host.ssh_secret is not None


def _replica(alive: object) -> object:
    """The replica that took a heartbeat (`/hs/alive/<uuid>`: {"at": ..., "replica": ...})."""
    return alive.get("replica") if isinstance(alive, dict) else None
