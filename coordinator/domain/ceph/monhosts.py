"""The cephagents of the mons a storage is added with (ZStack 0.9 deploys its agents onto the mon servers with the
monUrls' SSH credentials): each mon whose address is no ceph host yet is registered as one with those credentials,
through `hosts.register` as `hs host add --kind ceph` does, so that the elected replica deploys its agent
(leader/autodeploy.py); the add then waits, up to `wait` seconds, until those agents are Connected.

- Only while the coordinator deploys agents (`agentdeploy.automatic`): otherwise nothing would deploy them, and an
  add goes on as before (the mons' agents must be there).
- A mon whose agent answers with the shared `cephagent_token` (deployed by hand) is left as it is.
- A ceph host whose agent never answered is waited for too. It takes the monUrl's credentials when it has none or
  another password (one corrected and given again; a key file stays), and the SSH host keys given for it when it
  has none; both make the elected replica try its deploy again at once.
- A host whose agent answered once is not redeployed here: an agent that is down is the add's `agent_unreachable`.

The wait ends when those agents are Connected; with `AgentDeployFailed` carrying the cause of a deploy that failed
since the host's record last changed (its deploy log, `hs host deploy-log`); or with `AgentsDeploying` naming each
host and where its deploy is. The hosts stay registered, so the same request made again goes on from there and
registers nobody twice. Messages name mons by address and host name, never with a password.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass

from pydantic import ValidationError

from agentkit.addr import same_host_key
from agentkit.errors import Invalid
from cephagent.errors import CephAgentError, InvalidMonUrl
from cephagent.monurl import FIELD, MonUrl
from coordinator.domain import agentdeploy, credentials, hosts
from coordinator.domain.ceph.agents import Agents
from coordinator.domain.ceph.errors import AgentDeployFailed, AgentsDeploying
from coordinator.domain.deploys import DeployLogEntry
from coordinator.domain.hosts import Host, HostStatus, SshCredentials
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store
from coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)
POLL = 0.5  # seconds between looks at the hosts waited for
PROBE_TIMEOUT = 5.0  # seconds an agent deployed by hand has to answer
KEYS_FIELD = "ssh_host_keys"
HostKeys = dict[str, list[str]]  # mon_server_ip -> the SSH host keys deploys accept from it
CREDENTIAL_PARTS = {"user": "ssh_username", "port": "ssh_port", "password": "ssh_password"}


@dataclass(frozen=True)
class MonHost:
    """A mon host of the request: its first monUrl and the credentials it gives."""

    url: MonUrl
    ssh: SshCredentials


@dataclass(frozen=True)
class Deploy:
    """Where the cephagent of a host waited for stands: Connected, failed (`state`: the task and its cause), or
    `state` says where its deploy is."""

    host: Host
    connected: bool
    failed: bool
    state: str

    def __str__(self) -> str:
        return f"{self.host.address} (host {self.host.name}): {self.state}"


async def ensure_agents(store: Store, settings: CoordinatorSettings, mons: list[MonUrl], host_keys: HostKeys | None,
                        wait: float) -> None:
    """Register the mons that need a cephagent as ceph hosts, then wait up to `wait` seconds for their agents."""
    if not agentdeploy.automatic(settings):
        return
    given_keys = host_keys or {}
    wanted = mon_hosts(mons, given_keys)
    ceph = {same_host_key(s.host.address): s for s in await hosts.statuses(store, settings.heartbeat_timeout)
            if s.host.kind == "ceph"}
    awaited = []
    for mon in wanted:
        given = given_keys.get(mon.url.host)
        status = ceph.get(same_host_key(mon.url.host))
        if status is None and not await _served_by_hand(settings, mon.url.host):
            awaited.append(await _register(store, settings, mon, given))
        elif status is not None and never_answered(status):
            awaited.append(await _renew(store, settings, status.host, mon.ssh, given))
    await _wait_connected(store, settings, awaited, wait)


def mon_hosts(mons: list[MonUrl], host_keys: HostKeys) -> list[MonHost]:
    """Each mon host once, with the credentials of its first monUrl (checked before anything is registered);
    `host_keys` may name only these hosts."""
    first: dict[str, MonHost] = {}
    for i, url in enumerate(mons):
        if url.host not in first:
            first[url.host] = MonHost(url, ssh_of(url, f"{FIELD}[{i}]"))
    if unknown := sorted(set(host_keys) - set(first)):
        raise Invalid(f"{', '.join(unknown)}: no mon_server_ip of {FIELD}", field=KEYS_FIELD)
    return list(first.values())


def ssh_of(url: MonUrl, where: str) -> SshCredentials:
    """A monUrl's SSH credentials as deploys take them; `invalid_mon_url` (without the password) when they cannot."""
    try:
        return SshCredentials(user=url.ssh_username, port=url.ssh_port, password=url.ssh_password)
    except ValidationError as e:
        error = e.errors()[0]
        part = str(error["loc"][0])
        raise InvalidMonUrl(field=FIELD, where=where, problem=f"{CREDENTIAL_PARTS.get(part, part)}: {error['msg']}"
                            ) from None


def never_answered(status: HostStatus) -> bool:
    """A ceph host whose agent never answered: being deployed, or to be."""
    return status.state == "Disconnected" and status.host.agent_version is None


async def _served_by_hand(settings: CoordinatorSettings, address: str) -> bool:
    """Does a cephagent deployed by hand (with the shared `cephagent_token`) answer at `address`?"""
    if not settings.cephagent_token:
        return False
    async with Agents(settings, PROBE_TIMEOUT) as agents:
        try:
            await agents.client(address).health()
        except CephAgentError:
            return False
    log.info("mon %s: a cephagent deployed by hand answers there; it is not registered as a ceph host", address)
    return True


async def _register(store: Store, settings: CoordinatorSettings, mon: MonHost, host_keys: list[str] | None) -> Host:
    taken = {h.name for h in await hosts.all_hosts(store)}
    host, _ = await hosts.register(store, settings, host_name(mon.url.host, taken), mon.url.host, "ceph", mon.ssh,
                                   host_keys)
    log.info("mon %s registered as ceph host %s, for its cephagent to be deployed", mon.url.redacted, host.name)
    return host


def host_name(address: str, taken: set[str]) -> str:
    """`ceph-<address>` (a character no name takes, such as IPv6's `:`, as `-`), numbered when taken."""
    base = "ceph-" + re.sub(r"[^A-Za-z0-9._-]", "-", address)
    name, n = base[:63], 1
    while name in taken:
        n += 1
        name = f"{base[:62 - len(str(n))]}-{n}"
    return name


async def _renew(store: Store, settings: CoordinatorSettings, host: Host, ssh: SshCredentials,
                 host_keys: list[str] | None) -> Host:
    """A ceph host whose agent never answered takes the monUrl's credentials in place of none or of another
    password, and SSH host keys where it has none."""
    change: dict[str, object] = {}
    try:
        stored = hosts.open_ssh(settings, host)
    except credentials.CredentialError:
        stored = None
    if stored is None or (not stored.key_file and stored != ssh):
        change["ssh_secret"] = hosts.seal_ssh(settings, ssh)
    if host_keys and not host.ssh_host_keys:
        change["ssh_host_keys"] = host_keys
    if not change:
        return host
    log.info("ceph host %s: %s given with its monUrl, its deploy is tried again", host.name, ", ".join(sorted(change)))
    return await hosts.update(store, host.uuid, lambda h: h.model_copy(update=change))


async def _wait_connected(store: Store, settings: CoordinatorSettings, awaited: list[Host], wait: float) -> None:
    deadline = time.monotonic() + wait
    while awaited:
        deploys = await _deploys(store, settings, awaited)
        if failed := [d for d in deploys if d.failed]:
            raise AgentDeployFailed(f"the cephagent deploy failed on {'; '.join(map(str, failed))}. Correct the "
                                    f"monUrl (or the host: hs host deploy-log {failed[0].host.name}) and add again",
                                    field=FIELD)
        pending = [d for d in deploys if not d.connected]
        left = deadline - time.monotonic()
        if pending and left <= 0:
            raise AgentsDeploying(f"the cephagents of {len(pending)} mon host(s) are not Connected yet (waited "
                                  f"{wait:.0f} s): {'; '.join(map(str, pending))}. The same request made again goes "
                                  "on from here (hs host deploy-log HOST shows a host's deploy)", field=FIELD)
        awaited = [d.host for d in pending]
        if awaited:
            await asyncio.sleep(min(POLL, left))


async def _deploys(store: Store, settings: CoordinatorSettings, awaited: list[Host]) -> list[Deploy]:
    """Each host's deploy, from its record, heartbeat and deploy log read at one revision."""
    prefixes = {h.uuid: (keys.host(h.uuid), keys.alive(h.uuid), keys.deploy_log(h.uuid)) for h in awaited}
    snap, _ = await store.snapshot([p for each in prefixes.values() for p in each])  # a host's keys are whole keys
    now = time.time()
    out = []
    for h in awaited:
        record, alive, entries = (snap[p] for p in prefixes[h.uuid])
        out.append(deploy_of(h, record[0] if record else None, alive[0].value if alive else None, entries,
                             settings.heartbeat_timeout, now))
    return out


def deploy_of(host: Host, record: Entry | None, alive: object, log_entries: list[Entry], timeout: float,
              now: float) -> Deploy:
    """Connected, failed (the newest deploy log entry written since the record last changed is a failed task), or
    where the deploy is."""
    if record is None:
        return Deploy(host, False, True, "the host was deleted meanwhile")
    host = Host.model_validate(record.value)
    if hosts.state_of(hosts.beat_of(alive), timeout, now) == "Connected":
        return Deploy(host, True, False, "Connected")
    since = sorted((e for e in log_entries if e.create_revision > record.mod_revision), key=lambda e: e.create_revision)
    if not since:
        return Deploy(host, False, False, "its deploy has not started yet")
    last = DeployLogEntry.model_validate(since[-1].value)
    if last.phase == "after" and last.ok is False:
        return Deploy(host, False, True, f"{last.task}: {last.message}")
    return Deploy(host, False, False, f"deploying, {last.task} {'running' if last.phase == 'before' else 'done'}")
