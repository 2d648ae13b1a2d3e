"""Hosts: registration with a per-host token, agent connect and heartbeat, facts, state, SSH credentials."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from agentkit import __version__
from agentkit.model import HostFacts
from coordinator.api.appkeys import SETTINGS, STORE
from coordinator.api.http import Routes
from coordinator.domain import hosts
from coordinator.domain.fields import HostAddress, Name
from coordinator.domain.hosts import HostKind, HostState, HostStatus, SshCredentials

routes = Routes("hosts")


class HostCreate(BaseModel):
    name: Name
    address: HostAddress
    kind: HostKind = "kvm"
    ssh: SshCredentials | None = Field(None, description="for deploys and automatic agent upgrades; stored "
                                       "encrypted, never returned")


class HostOut(BaseModel):
    uuid: str
    name: str
    address: str
    kind: HostKind
    state: HostState
    facts: HostFacts | None = None
    agent_version: str | None = None
    last_heartbeat: float | None = None
    ssh_credentials: bool = Field(False, description="SSH credentials are stored (they are never shown)")
    token: str | None = Field(None, description="only in the registration answer")


class HostList(BaseModel):
    hosts: list[HostOut]


class ConnectOut(BaseModel):
    heartbeat_interval: float
    coordinator_version: str


def host_out(s: HostStatus, token: str | None = None) -> HostOut:
    h = s.host
    return HostOut(uuid=h.uuid, name=h.name, address=h.address, kind=h.kind, state=s.state, facts=h.facts,
                   agent_version=h.agent_version, last_heartbeat=s.last_heartbeat,
                   ssh_credentials=h.ssh_secret is not None, token=token)


@routes.route("POST", "/v1/hosts", body=HostCreate, response=HostOut, status=201)
async def create_host(request: web.Request, body: HostCreate) -> HostOut:
    """Register a host; the answer carries its agent token, shown only once."""
    host, token = await hosts.register(request.app[STORE], request.app[SETTINGS], body.name, body.address,
                                       body.kind, body.ssh)
    return host_out(HostStatus(host, None, "Disconnected"), token)


@routes.route("GET", "/v1/hosts", response=HostList)
async def list_hosts(request: web.Request) -> HostList:
    """All hosts with their connection state."""
    found = await hosts.statuses(request.app[STORE], request.app[SETTINGS].heartbeat_timeout)
    return HostList(hosts=[host_out(s) for s in found])


@routes.route("GET", "/v1/hosts/{uuid}", response=HostOut)
async def get_host(request: web.Request) -> HostOut:
    """One host, by uuid or name."""
    return host_out(await hosts.status(request.app[STORE], request.match_info["uuid"],
                                       request.app[SETTINGS].heartbeat_timeout))


@routes.route("DELETE", "/v1/hosts/{uuid}", status=204)
async def delete_host(request: web.Request) -> web.Response:
    """Forget a host; refused while VMs are placed on it."""
    await hosts.delete(request.app[STORE], request.match_info["uuid"])
    return web.Response(status=204)


@routes.route("POST", "/v1/hosts/{uuid}/connect", body=HostFacts, response=ConnectOut, auth="host")
async def connect_host(request: web.Request, body: HostFacts) -> ConnectOut:
    """An agent (re)connects: records its facts and version, and counts as a heartbeat."""
    settings = request.app[SETTINGS]
    await hosts.connect(request.app[STORE], request.match_info["uuid"], body, settings.replica_id)
    return ConnectOut(heartbeat_interval=settings.heartbeat_interval, coordinator_version=__version__)


@routes.route("POST", "/v1/hosts/{uuid}/heartbeat", status=204, auth="host")
async def heartbeat(request: web.Request) -> web.Response:
    """Liveness of a host's agent."""
    await hosts.heartbeat(request.app[STORE], request.match_info["uuid"], request.app[SETTINGS].replica_id)
    return web.Response(status=204)


@routes.route("PUT", "/v1/hosts/{uuid}/ssh", body=SshCredentials, status=204)
async def put_ssh(request: web.Request, body: SshCredentials) -> web.Response:
    """Set or replace the SSH credentials the deployer uses on this host (stored encrypted)."""
    await hosts.set_ssh(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"], body)
    return web.Response(status=204)


@routes.route("POST", "/v1/hosts/{uuid}/ssh/reveal", response=SshCredentials)
async def reveal_ssh(request: web.Request) -> SshCredentials:
    """The stored SSH credentials, for `hs deploy` on an operator's machine (a POST: never cached, never a GET)."""
    return await hosts.reveal_ssh(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"])
