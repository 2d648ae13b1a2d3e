"""Hosts: registration with a per-host token, agent connect and heartbeat, facts, state, SSH credentials,
the agent's certificate and the renewal of its token."""

from __future__ import annotations

import datetime as dt
import email.utils

from aiohttp import web
from pydantic import BaseModel, Field

from agentkit import __version__, sshkeys
from agentkit.model import HostFacts
from coordinator.api.appkeys import CREDENTIALS, SETTINGS, STORE
from coordinator.api.auth import CALLER
from coordinator.api.http import Routes
from coordinator.domain import certificates, hostmemory, hosts
from coordinator.domain.fields import HostAddress, Name
from coordinator.domain.hosts import HostHealth, HostKind, HostState, HostStatus, SshCredentials, SshHostKeys

routes = Routes("hosts")


class HostCreate(BaseModel):
    name: Name
    address: HostAddress
    kind: HostKind = "kvm"
    ssh: SshCredentials | None = Field(None, description="for deploys and automatic agent upgrades; stored "
                                       "encrypted, never returned")
    ssh_host_keys: SshHostKeys | None = Field(None, description="the host's SSH public host keys ('<type> <base64>'), "
                                              "the only ones deploys accept; `hs host add` reads them and shows "
                                              "their fingerprints when not given")


class SshHostKeysIn(BaseModel):
    keys: SshHostKeys


class HostOut(BaseModel):
    uuid: str
    name: str
    address: str
    kind: HostKind
    state: HostState
    facts: HostFacts | None = None
    agent_version: str | None = None
    agent_session: str | None = Field(None, description="the session of its agent's process, new at each start of "
                                      "it (the same across reconnects): a deploy waits for one it did not see before "
                                      "it restarted the agent; None: an agent older than sessions")
    last_heartbeat: float | None = None
    health: HostHealth | None = Field(None, description="what its agent last reported of its health (KVM hosts)")
    clock_offset: int | None = Field(None, description="seconds its agent's clock was ahead of the coordinator's at "
                                     "its last heartbeat (negative: behind), to a second or so; the tickets it "
                                     "checks allow 300 either way")
    ssh_credentials: bool = Field(False, description="SSH credentials are stored (they are never shown)")
    ssh_host_keys: list[str] = Field([], description="the SSH host keys deploys accept; none: no deploy")
    ssh_host_key_fingerprints: list[str] = Field([], description="their SHA256 fingerprints, as ssh shows them")
    token: str | None = Field(None, description="only in the registration answer")


class HostList(BaseModel):
    hosts: list[HostOut]


class HostCapacityOut(hostmemory.HostMemory):
    state: HostState


class CapacityList(BaseModel):
    hosts: list[HostCapacityOut]


class ConnectOut(BaseModel):
    heartbeat_interval: float
    coordinator_version: str
    token_renew_at: float | None = Field(None, description="when the agent should renew its token (a third of its "
                                         "lifetime before it expires), on this replica's clock; None: it does not "
                                         "expire")
    token_renew_in: float | None = Field(None, description="the same as seconds from now (what agents go by: their "
                                         "own clock may be off the coordinator's); None: it does not expire")


class CertificateRequest(BaseModel):
    csr: str = Field(max_length=16384, description="PEM certificate signing request of the host's EC key; only "
                     "its key is used: the certificate names the host's uuid and registered address")


class CertificateOut(BaseModel):
    certificate: str = Field(description="PEM chain: the host's certificate, then the CA's")
    ca: str = Field(description="PEM of the CA certificate")
    expires_at: float


class TokenOut(BaseModel):
    token: str = Field(description="the agent's new token; the one that asked no longer authenticates")
    expires_at: float | None


def host_out(s: HostStatus, token: str | None = None) -> HostOut:
    h = s.host
    return HostOut(uuid=h.uuid, name=h.name, address=h.address, kind=h.kind, state=s.state, facts=h.facts,
                   agent_version=h.agent_version, agent_session=h.agent_session, last_heartbeat=s.last_heartbeat,
                   health=s.health, clock_offset=s.clock_offset,
                   ssh_credentials=h.ssh_secret is not None, ssh_host_keys=h.ssh_host_keys or [],
                   ssh_host_key_fingerprints=[sshkeys.fingerprint(k) for k in h.ssh_host_keys or []], token=token)


@routes.route("POST", "/v1/hosts", body=HostCreate, response=HostOut, status=201)
async def create_host(request: web.Request, body: HostCreate) -> HostOut:
    """Register a host; the answer carries its agent token, shown only once. 409 `exists` when another host has
    its name, or has its address and its kind (one machine registered twice; other kinds share an address)."""
    host, token = await hosts.register(request.app[STORE], request.app[SETTINGS], body.name, body.address,
                                       body.kind, body.ssh, body.ssh_host_keys)
    return host_out(HostStatus(host, None, "Disconnected"), token)


@routes.route("GET", "/v1/hosts", response=HostList)
async def list_hosts(request: web.Request) -> HostList:
    """All hosts with their connection state and health."""
    found = await hosts.statuses(request.app[STORE], request.app[SETTINGS].heartbeat_timeout, health=True)
    return HostList(hosts=[host_out(s) for s in found])


@routes.route("GET", "/v1/capacity", response=CapacityList)
async def capacity(request: web.Request) -> CapacityList:
    """Each KVM host's memory as placement counts it (GetCpuMemoryCapacity of the seeds): what its agent
    reported, kept for the host, over-provisioned, given to VMs that are not Stopped, and available."""
    found = await hosts.statuses(request.app[STORE], request.app[SETTINGS].heartbeat_timeout)
    memory = await hostmemory.of_hosts(request.app[STORE], (s.host for s in found))
    return CapacityList(hosts=[HostCapacityOut(**memory[s.host.uuid].model_dump(), state=s.state)
                               for s in found if s.host.uuid in memory])


@routes.route("GET", "/v1/hosts/{uuid}", response=HostOut)
async def get_host(request: web.Request) -> HostOut:
    """One host, by uuid or name."""
    return host_out(await hosts.status(request.app[STORE], request.match_info["uuid"],
                                       request.app[SETTINGS].heartbeat_timeout))


@routes.route("DELETE", "/v1/hosts/{uuid}", status=204)
async def delete_host(request: web.Request) -> None:
    """Forget a host; refused (409 in_use) while VMs are placed on it, it holds an image store, or LocalStorage
    volumes are on it or migrate to or from it; the SharedMountPoint volumes it works on go to another host
    attached to their storage (refused when none reports it Ready)."""
    host = await hosts.find(request.app[STORE], request.match_info["uuid"])
    await hosts.delete(request.app[STORE], host.uuid)
    request.app[CREDENTIALS].forget(host.uuid)


@routes.route("POST", "/v1/hosts/{uuid}/connect", body=HostFacts, response=ConnectOut, auth="host")
async def connect_host(request: web.Request, body: HostFacts) -> ConnectOut:
    """An agent (re)connects: records its facts, version and session, and counts as a heartbeat."""
    settings = request.app[SETTINGS]
    host = await hosts.connect(request.app[STORE], request.match_info["uuid"], body, settings.replica_id,
                               _clock(request))
    renew_at = hosts.renew_at(host, settings.host_token_lifetime, _token_used(request))
    return ConnectOut(heartbeat_interval=settings.heartbeat_interval, coordinator_version=__version__,
                      token_renew_at=renew_at, token_renew_in=hosts.renew_in(renew_at))


@routes.route("POST", "/v1/hosts/{uuid}/heartbeat", status=204, auth="host")
async def heartbeat(request: web.Request) -> None:
    """Liveness of a host's agent."""
    await hosts.heartbeat(request.app[STORE], request.match_info["uuid"], request.app[SETTINGS].replica_id,
                          _clock(request))


def _clock(request: web.Request) -> float | None:
    """The sender's clock, as the `Date` header it sent says (agents send one; others, or one that does not
    parse, tell nothing): the middle of the second it names, which is the sender's time cut to whole seconds
    (else a host whose clock agrees showed -1 s about every other heartbeat)."""
    try:
        sent = email.utils.parsedate_to_datetime(request.headers["Date"])
    except (KeyError, TypeError, ValueError, IndexError, OverflowError):
        return None
    return (sent if sent.tzinfo else sent.replace(tzinfo=dt.UTC)).timestamp() + 0.5


@routes.route("PUT", "/v1/hosts/{uuid}/ssh", body=SshCredentials, status=204)
async def put_ssh(request: web.Request, body: SshCredentials) -> None:
    """Set or replace the SSH credentials the deployer uses on this host (stored encrypted)."""
    await hosts.set_ssh(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"], body)


@routes.route("PUT", "/v1/hosts/{uuid}/ssh-host-keys", body=SshHostKeysIn, response=HostOut)
async def put_ssh_host_keys(request: web.Request, body: SshHostKeysIn) -> HostOut:
    """Replace the SSH host keys deploys accept from this host (after a reinstall or a key rotation)."""
    await hosts.set_ssh_host_keys(request.app[STORE], request.match_info["uuid"], body.keys)
    return host_out(await hosts.status(request.app[STORE], request.match_info["uuid"],
                                       request.app[SETTINGS].heartbeat_timeout))


@routes.route("POST", "/v1/hosts/{uuid}/ssh/reveal", response=SshCredentials)
async def reveal_ssh(request: web.Request) -> SshCredentials:
    """The stored SSH credentials, for `hs deploy` on an operator's machine (a POST: never cached, never a GET)."""
    return await hosts.reveal_ssh(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"])


@routes.route("POST", "/v1/hosts/{uuid}/certificate", body=CertificateRequest, response=CertificateOut, auth="host")
async def host_certificate(request: web.Request, body: CertificateRequest) -> CertificateOut:
    """Issue the host a certificate for its key (its agent, with its token; or the deployer)."""
    chain, ca, expires = await certificates.issue(request.app[STORE], request.app[SETTINGS],
                                                  request.match_info["uuid"], body.csr)
    return CertificateOut(certificate=chain, ca=ca, expires_at=expires)


@routes.route("POST", "/v1/hosts/{uuid}/token/renew", response=TokenOut, auth="host")
async def renew_token(request: web.Request) -> TokenOut:
    """A new token for the agent that asks (the one it asked with works until it expires, in case this
    answer is lost; any other is void at once)."""
    token, expires = await hosts.renew_token(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"],
                                             _token_used(request))
    await request.app[CREDENTIALS].refresh(request.match_info["uuid"])
    return TokenOut(token=token, expires_at=expires)


def _token_used(request: web.Request) -> str | None:
    """The hash of the host token the request came with (None: an admin's)."""
    credential = request[CALLER].credential
    return credential.sha256 if credential is not None else None
