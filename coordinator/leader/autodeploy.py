"""Automatic agent deploys: the elected replica deploys the agent of a new host, and upgrades an old one.

`HostWatch` (hostwatch.py) calls `AutoDeployer.request(host)` on every tick for each host that needs
its agent: a host registered with SSH credentials whose agent never connected (ZStack's "add host"
deploys the agent), and a Connected host whose agent reports another version than the coordinator's
(ZStack 0.9: agents are upgraded when the management node reconnects them). kvm hosts get the
kvmagent, ceph hosts the cephagent (whose version the coordinator learns from its /health, see
polledhosts.py), console proxy hosts the consoleproxy, image store hosts the imagestore. `request` is
cheap and only decides; `run`, a loop of the elected replica, deploys what was requested: hosts that come
together go in one batch, one child process `python -m deployer` per agent (domain/agentdeploy.py).

A host is deployed once at a time here, and the deployer holds the host's deploy lock
(domain/deploys.py), so an operator's `hs deploy` of the same host waits for it. An attempt is
remembered per host with its key, the agent version, stored SSH credentials and recorded SSH host keys it was
made for: a failed attempt with the same key is retried only after `deploy_backoff` seconds, doubling per failure
up to an hour, so a host that cannot be deployed costs one attempt now and then, never a hot loop.
New credentials (`PUT .../ssh`) or new SSH host keys (`hs host ssh-host-key`) make a new key and are tried at
once; a newly reported version too, but no sooner than `deploy_backoff` seconds after the host's last deploy: what a
host reports is its own choice, and one that flapped between versions was deployed back to back.
The memory lives in the process: a new leader tries each such host once more.

A host's report (another agent version) never makes the coordinator send it a stored *password*: an
upgrade logs in with a key (`key_file`), and with the key alone where a password is stored beside it, since a
host that was taken over would otherwise harvest the password by reporting an old version (its sshd refusing
the key; shared passwords open other hosts too). Passwords serve the first
deploy of a host that never ran an agent, and operators' `hs deploy`; `auto_upgrade_with_password`
allows them for upgrades too. Every deploy accepts only the SSH host keys recorded for the host.

The deploy keeps the host token in the agent's config while the coordinator still accepts it
(targets carry no token; see deployer.coordinator_api.coordinator_tokens), so an upgrade replaces the
wheels and restarts the agent but does not rewrite its config; a new host gets its first token.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from coordinator.domain import agentdeploy, credentials
from coordinator.domain.agentdeploy import AGENTS, Runner
from coordinator.domain.hosts import Host, open_ssh
from coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)
BATCH_WINDOW = 1.0  # seconds to gather hosts that come together into one deploy
MAX_BACKOFF = 3600.0


class Key(NamedTuple):
    """What a deploy attempt was made for: another key is another attempt."""

    version: str | None  # the agent version the host reported
    ssh_secret: str | None  # its SSH credentials, sealed
    ssh_host_keys: tuple[str, ...]  # its recorded SSH host keys

    @classmethod
    def of(cls, host: Host) -> Key:
        return cls(host.agent_version, host.ssh_secret, tuple(host.ssh_host_keys or ()))

    def same_access(self, other: Key) -> bool:
        """Whether both log in alike: the same credentials and host keys (the version may differ)."""
        return (self.ssh_secret, self.ssh_host_keys) == (other.ssh_secret, other.ssh_host_keys)


@dataclass
class Attempt:
    key: Key
    failures: int
    retry_at: float
    at: float = -math.inf  # when it deployed (-inf: it only decided not to)

    def next_try(self, key: Key, backoff: float) -> float:
        """When a deploy for `key` may follow this attempt: the same key backs off; another version alone (what the
        host reports, its own choice) waits `backoff` after this deploy; new credentials or SSH host keys do not."""
        if key == self.key:
            return self.retry_at
        return self.at + backoff if key.same_access(self.key) else -math.inf


class AutoDeployer:
    """Decides which hosts to deploy (`request`, HostWatch's hook) and deploys them (`run`, a leader loop)."""

    def __init__(self, settings: CoordinatorSettings, version: str, runner: Runner | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.settings, self.version, self.clock = settings, version, clock
        self.runner = runner or (lambda request: agentdeploy.run_deployer(settings, request))
        self.pending: dict[str, Host] = {}
        self.busy: set[str] = set()
        self.attempts: dict[str, Attempt] = {}
        self._wake = asyncio.Event()

    async def request(self, host: Host) -> None:
        """Queue `host` for a deploy unless it is in one, or its last attempt says not yet (Attempt.next_try)."""
        uuid = host.uuid
        if uuid in self.busy or uuid in self.pending:
            return
        key = Key.of(host)
        last = self.attempts.get(uuid)
        if last and self.clock() < last.next_try(key, self.settings.deploy_backoff):
            return
        if key.ssh_secret is None:
            log.warning("host %s runs %s %s, the coordinator is %s, but it has no SSH credentials to upgrade it "
                        "with (hs deploy ssh %s ...)", host.name, AGENTS[host.kind], key.version, self.version,
                        host.name)
            self.attempts[uuid] = Attempt(key, 0, math.inf)
            return
        if not self._password_allowed(host) and self._password(host):
            log.warning("host %s runs %s %s, the coordinator is %s: not upgraded automatically with its stored "
                        "password (a host's report never gets a password sent to it); store a key "
                        "(hs deploy ssh %s --key-file ...) or run hs deploy", host.name, AGENTS[host.kind], key.version,
                        self.version, host.name)
            self.attempts[uuid] = Attempt(key, 0, math.inf)
            return
        self.pending[uuid] = host
        self._wake.set()

    def retain(self, hosts: set[str]) -> None:
        """Forget the attempts of hosts deleted since (`hosts`: those there are)."""
        for uuid in set(self.attempts) - hosts:
            del self.attempts[uuid]

    def _password_allowed(self, host: Host) -> bool:
        """The host's stored password may log in to it: at its first deploy (it never ran an agent), or with
        `auto_upgrade_with_password`. Else it is an upgrade the host's report asked for, which logs in with the key
        alone: with a password beside it, the sshd of a host taken over would refuse the key and get the password."""
        return host.agent_version is None or self.settings.auto_upgrade_with_password

    def _password(self, host: Host) -> bool:
        """The host's stored credentials log in with a password (not a key)."""
        try:
            ssh = open_ssh(self.settings, host)
        except credentials.CredentialError:
            return False  # the deploy reports it
        return ssh is not None and not ssh.key_file

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(BATCH_WINDOW)
            self._wake.clear()
            batch, self.pending = self.pending, {}
            self.busy = set(batch)
            try:
                await asyncio.gather(*(self._deploy(agent, [h for h in batch.values() if AGENTS[h.kind] == agent])
                                       for agent in sorted({AGENTS[h.kind] for h in batch.values()})))
            finally:
                self.busy = set()

    async def _deploy(self, agent: str, batch: list[Host]) -> None:
        results = await agentdeploy.deploy(self.settings, agent, batch, "automatic deploy", self.runner,
                                           self._password_allowed)
        for host in batch:
            self._record(host, *results[host.uuid])

    def _record(self, host: Host, ok: bool, message: str) -> None:
        key = Key.of(host)
        last = self.attempts.get(host.uuid)
        failures = 0 if ok else (last.failures + 1 if last and last.key == key else 1)
        delay = MAX_BACKOFF if ok else min(self.settings.deploy_backoff * 2 ** (failures - 1), MAX_BACKOFF)
        self.attempts[host.uuid] = Attempt(key, failures, self.clock() + delay, self.clock())
        if ok:
            log.info("agent deploy: %s", message)
        else:
            log.warning("agent deploy failed: %s (next try in %.0f s unless its version, SSH credentials or SSH host "
                        "keys change)", message, delay)


def from_settings(settings: CoordinatorSettings, version: str) -> AutoDeployer | None:
    """The auto-deployer the settings ask for, or None (logged) when automatic deploys are off."""
    if settings.auto_deploy and not settings.coordinator_url_for_agents:
        log.warning("auto_deploy is on but coordinator_url_for_agents is unset: agents are not deployed or "
                    "upgraded automatically (set it to the URL hosts reach this coordinator at)")
    return AutoDeployer(settings, version) if agentdeploy.automatic(settings) else None
