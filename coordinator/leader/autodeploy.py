"""Automatic agent deploys: the elected replica deploys the agent of a new host, and upgrades an old one.

`HostWatch` (hostwatch.py) calls `AutoDeployer.request(host)` on every tick for each host that needs
its agent: a host registered with SSH credentials whose agent never connected (ZStack's "add host"
deploys the agent), and a Connected host whose agent reports another version than the coordinator's
(ZStack 0.9: agents are upgraded when the management node reconnects them). kvm hosts get the
kvmagent, ceph hosts the cephagent (whose version the coordinator learns from its /health, see
cephhosts.py). `request` is cheap and only decides; `run`, a loop of the elected replica, deploys
what was requested: hosts that come together go in one batch, one child process `python -m deployer`
per agent (ansible forks, keeps process-wide state and sets signal handlers, so it never runs inside
the coordinator). The request, with the hosts' decrypted SSH credentials, goes in on stdin.

A host is deployed once at a time here, and the deployer holds the host's deploy lock
(domain/deploys.py), so an operator's `hs deploy` of the same host waits for it. An attempt is
remembered per host with its key, the (agent version, stored SSH credentials) pair it was made for: a
failed attempt with the same key is retried only after `deploy_backoff` seconds, doubling per failure
up to an hour, so a host that cannot be deployed costs one attempt now and then, never a hot loop.
New credentials (`PUT .../ssh`) or a newly reported version make a new key and are tried at once.
The memory lives in the process: a new leader tries each such host once more.

The deploy keeps the host token in the agent's config while the coordinator still accepts it
(targets carry no token; see deployer.coordinator_api.coordinator_tokens), so an upgrade replaces the
wheels and restarts the agent but does not rewrite its config; a new host gets its first token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentkit.proc import ProcessError, arun
from coordinator.domain import credentials
from coordinator.domain.hosts import Host, open_ssh
from coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)
BATCH_WINDOW = 1.0  # seconds to gather hosts that come together into one deploy
MAX_BACKOFF = 3600.0
TIMEOUT = 1800.0  # a deploy that installs packages on a slow host may take minutes
# deployer request (as `python -m deployer` reads it) -> {host name: Result as a dict} or {"error": text}
Json = dict[str, Any]
Runner = Callable[[Json], Awaitable[Json]]


@dataclass
class Attempt:
    key: tuple[str | None, str | None]
    failures: int
    retry_at: float


def own_url(settings: CoordinatorSettings) -> str:
    """Where the deployer child reaches this replica's API (deploy log, tokens, Connected check)."""
    host = "127.0.0.1" if settings.listen in ("", "0.0.0.0", "::") else settings.listen  # noqa: S104
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"


async def run_deployer(settings: CoordinatorSettings, request: Json) -> Json:
    """One `python -m deployer` child; its last stdout line is the JSON answer."""
    argv = [sys.executable, "-m", "deployer"]
    if settings.deployer_config:
        argv = ["env", f"HS_DEPLOYER_CONFIG={settings.deployer_config}", *argv]
    p = await arun(argv, input=json.dumps(request), rcs=(0, 1, 2), timeout=TIMEOUT,
                   logstring="python -m deployer (automatic deploy)")
    lines = p.stdout.strip().splitlines()
    if not lines:
        return {"error": f"the deployer exited {p.returncode}: {p.stderr.strip()[-300:]}"}
    answer: Json = json.loads(lines[-1])
    return answer


AGENTS = {"kvm": "kvmagent", "ceph": "cephagent"}  # host kind -> the agent it runs


class AutoDeployer:
    """Decides which hosts to deploy (`request`, HostWatch's hook) and deploys them (`run`, a leader loop)."""

    def __init__(self, settings: CoordinatorSettings, version: str, runner: Runner | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.settings, self.version, self.clock = settings, version, clock
        self.runner = runner or (lambda request: run_deployer(settings, request))
        self.pending: dict[str, Host] = {}
        self.busy: set[str] = set()
        self.attempts: dict[str, Attempt] = {}
        self._wake = asyncio.Event()

    async def request(self, host: Host) -> None:
        """Queue `host` for a deploy unless it is in one, or an attempt with the same key is still backing off."""
        uuid = host.uuid
        if uuid in self.busy or uuid in self.pending:
            return
        key = (host.agent_version, host.ssh_secret)
        last = self.attempts.get(uuid)
        if last and last.key == key and self.clock() < last.retry_at:
            return
        if key[1] is None:
            log.warning("host %s runs %s %s, the coordinator is %s, but it has no SSH credentials to upgrade it "
                        "with (hs deploy ssh %s ...)", host.name, AGENTS[host.kind], key[0], self.version, host.name)
            self.attempts[uuid] = Attempt(key, 0, math.inf)
            return
        self.pending[uuid] = host
        self._wake.set()

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
        targets = {}
        for host in batch:
            try:
                ssh = open_ssh(self.settings, host)
            except credentials.CredentialError as e:
                self._record(host, False, f"{host.name}: {e}")
                continue
            assert ssh is not None  # request() queues only hosts with credentials
            targets[host.name] = {"name": host.name, "address": host.address, "host_uuid": host.uuid,
                                  "host_token": None, "port": ssh.port, "user": ssh.user,
                                  "password": ssh.password, "key_file": ssh.key_file}
        if not targets:
            return
        log.info("deploying %s %s to %s", agent, self.version, ", ".join(targets))
        request = {"agent": agent, "coordinator_url": self.settings.coordinator_url_for_agents,
                   "admin_token": self.settings.admin_token, "api_url": own_url(self.settings),
                   "holder": f"the coordinator ({self.settings.replica_id}, automatic deploy)",
                   "targets": list(targets.values())}
        try:
            results = await self.runner(request)
        except (ProcessError, OSError, ValueError) as e:
            results = {"error": str(e)}
        for host in batch:
            if host.name in targets:
                r = results.get(host.name) or {}
                self._record(host, bool(r.get("ok")), r.get("message") or f"{host.name}: {results.get('error')}")

    def _record(self, host: Host, ok: bool, message: str) -> None:
        key = (host.agent_version, host.ssh_secret)
        last = self.attempts.get(host.uuid)
        failures = 0 if ok else (last.failures + 1 if last and last.key == key else 1)
        delay = MAX_BACKOFF if ok else min(self.settings.deploy_backoff * 2 ** (failures - 1), MAX_BACKOFF)
        self.attempts[host.uuid] = Attempt(key, failures, self.clock() + delay)
        if ok:
            log.info("agent deploy: %s", message)
        else:
            log.warning("agent deploy failed: %s (next try in %.0f s unless its version or SSH credentials change)",
                        message, delay)


def from_settings(settings: CoordinatorSettings, version: str) -> AutoDeployer | None:
    """The auto-deployer the settings ask for, or None (logged) when automatic deploys are off."""
    if not settings.auto_deploy:
        return None
    if not settings.coordinator_url_for_agents:
        log.warning("auto_deploy is on but coordinator_url_for_agents is unset: agents are not deployed or "
                    "upgraded automatically (set it to the URL hosts reach this coordinator at)")
        return None
    return AutoDeployer(settings, version)
