"""Hosts: registration with a per-host token, agent connect and heartbeat, facts, state, SSH credentials.

A host may also carry the SSH credentials the deployer uses on it (stored Fernet-encrypted, never in a
GET answer) so the elected replica can upgrade its agent unattended; see docs/deployer.md.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid as uuidlib
from collections.abc import Callable
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from agentkit.model import HostFacts
from coordinator.api.appkeys import SETTINGS, STORE
from coordinator.api.http import ApiError, Routes, not_found, token_hash
from coordinator.domain import credentials
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn
from coordinator.settings import CoordinatorSettings

routes = Routes("hosts")
HostKind = Literal["kvm", "ceph"]
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class SshCredentials(BaseModel):
    """How the deployer logs in to a host: a password, a private key file, or ssh's defaults."""

    user: str = Field("root", pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
    port: int = Field(22, ge=1, le=65535)
    password: str | None = Field(None, min_length=1, max_length=1024)
    key_file: str | None = Field(None, min_length=1, max_length=4096,
                                 description="private key path on the machine that runs the deployer")


class HostCreate(BaseModel):
    name: str = Field(pattern=NAME)
    address: str = Field(min_length=1, max_length=253, description="management IP or hostname")
    kind: HostKind = "kvm"
    ssh: SshCredentials | None = Field(None, description="for deploys and automatic agent upgrades; stored "
                                       "encrypted, never returned")


class HostOut(BaseModel):
    uuid: str
    name: str
    address: str
    kind: HostKind
    state: Literal["Connected", "Disconnected"]
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


def host_out(record: dict, alive: dict | None, timeout: float) -> HostOut:
    beat = alive.get("at") if alive else None
    state = "Connected" if beat and time.time() - beat < timeout else "Disconnected"
    return HostOut(uuid=record["uuid"], name=record["name"], address=record["address"], kind=record["kind"],
                   state=state, facts=record.get("facts"), agent_version=record.get("agent_version"),
                   last_heartbeat=beat, ssh_credentials="ssh_secret" in record)


def seal_ssh(settings: CoordinatorSettings, ssh: SshCredentials) -> str:
    return credentials.encrypt(settings.secret_key, settings.admin_token, ssh.model_dump_json())


def open_ssh(settings: CoordinatorSettings, record: dict) -> SshCredentials | None:
    """The host's stored SSH credentials; raises credentials.CredentialError when the key changed."""
    secret = record.get("ssh_secret")
    if secret is None:
        return None
    return SshCredentials.model_validate(json.loads(credentials.decrypt(settings.secret_key, settings.admin_token,
                                                                        secret)))


async def load_host(store: Store, uuid: str) -> dict:
    entry = await store.get(keys.host(uuid))
    if entry is None:
        raise not_found("host", uuid)
    return entry.value


async def find_host(store: Store, ref: str) -> dict:
    """A host by uuid or by name (names are unique)."""
    entry = await store.get(keys.host(ref))
    if entry:
        return entry.value
    hosts, _ = await store.list(keys.HOSTS)
    for h in hosts:
        if h.value["name"] == ref:
            return h.value
    raise not_found("host", ref)


@routes.route("POST", "/v1/hosts", body=HostCreate, response=HostOut, status=201)
async def create_host(request: web.Request, body: HostCreate):
    """Register a host; the answer carries its agent token, shown only once."""
    store = request.app[STORE]
    hosts, _ = await store.list(keys.HOSTS)
    if any(h.value["name"] == body.name for h in hosts):
        raise ApiError(409, "exists", f"a host named {body.name} already exists", "name")
    token = secrets.token_urlsafe(32)
    record = {"uuid": uuidlib.uuid4().hex, "name": body.name, "address": body.address, "kind": body.kind,
              "token_sha256": token_hash(token), "created": time.time()}
    if body.ssh is not None:
        record["ssh_secret"] = seal_ssh(request.app[SETTINGS], body.ssh)
    if await store.commit(Txn().absent(keys.host(record["uuid"])).put(keys.host(record["uuid"]), record)) is None:
        raise ApiError(409, "conflict", "host uuid collision, retry")
    out = host_out(record, None, request.app[SETTINGS].heartbeat_timeout)
    out.token = token
    return out


@routes.route("GET", "/v1/hosts", response=HostList)
async def list_hosts(request: web.Request):
    """All hosts with their connection state."""
    store = request.app[STORE]
    snap, _ = await store.snapshot([keys.HOSTS, keys.ALIVE])
    alive = {e.key[len(keys.ALIVE):]: e.value for e in snap[keys.ALIVE]}
    timeout = request.app[SETTINGS].heartbeat_timeout
    return HostList(hosts=[host_out(e.value, alive.get(e.value["uuid"]), timeout) for e in snap[keys.HOSTS]])


@routes.route("GET", "/v1/hosts/{uuid}", response=HostOut)
async def get_host(request: web.Request):
    """One host, by uuid or name."""
    store = request.app[STORE]
    record = await find_host(store, request.match_info["uuid"])
    alive = await store.get(keys.alive(record["uuid"]))
    return host_out(record, alive.value if alive else None, request.app[SETTINGS].heartbeat_timeout)


@routes.route("DELETE", "/v1/hosts/{uuid}", status=204)
async def delete_host(request: web.Request):
    """Forget a host; refused while VMs are placed on it."""
    store = request.app[STORE]
    record = await find_host(store, request.match_info["uuid"])
    if await store.count(keys.desired_host(record["uuid"]) + "vm/"):
        raise ApiError(409, "in_use", f"host {record['name']} still has VMs; delete or move them first")
    txn = Txn().delete(keys.host(record["uuid"])).delete(keys.alive(record["uuid"]))
    txn.delete(keys.desired_host(record["uuid"]), prefix=True).delete(keys.observed_seq(record["uuid"]))
    txn.delete(keys.deploy_log(record["uuid"]), prefix=True)
    await store.commit(txn)
    return web.Response(status=204)


@routes.route("POST", "/v1/hosts/{uuid}/connect", body=HostFacts, response=ConnectOut, auth="host")
async def connect_host(request: web.Request, body: HostFacts):
    """An agent (re)connects: records its facts and version, and counts as a heartbeat."""
    store = request.app[STORE]
    uuid = request.match_info["uuid"]
    for _ in range(10):
        entry = await store.get(keys.host(uuid))
        if entry is None:
            raise not_found("host", uuid)
        record = {**entry.value, "facts": body.model_dump(), "agent_version": body.agent_version}
        beat = {"at": time.time(), "replica": request.app[SETTINGS].replica_id}
        txn = Txn().unchanged(keys.host(uuid), entry.mod_revision).put(keys.host(uuid), record)
        if await store.commit(txn.put(keys.alive(uuid), beat)) is not None:
            break
    from agentkit import __version__
    return ConnectOut(heartbeat_interval=request.app[SETTINGS].heartbeat_interval, coordinator_version=__version__)


@routes.route("POST", "/v1/hosts/{uuid}/heartbeat", status=204, auth="host")
async def heartbeat(request: web.Request):
    """Liveness of a host's agent."""
    store = request.app[STORE]
    uuid = request.match_info["uuid"]
    await store.put(keys.alive(uuid), {"at": time.time(), "replica": request.app[SETTINGS].replica_id})
    return web.Response(status=204)


async def update_host(store: Store, uuid: str, change: Callable[[dict], dict]) -> None:
    """Apply `change(record) -> record` to a host with compare-and-swap (agents update it concurrently)."""
    for _ in range(10):
        entry = await store.get(keys.host(uuid))
        if entry is None:
            raise not_found("host", uuid)
        txn = Txn().unchanged(keys.host(uuid), entry.mod_revision).put(keys.host(uuid), change(entry.value))
        if await store.commit(txn) is not None:
            return
    raise ApiError(409, "conflict", f"host {uuid} changed concurrently, retry")


@routes.route("PUT", "/v1/hosts/{uuid}/ssh", body=SshCredentials, status=204)
async def put_ssh(request: web.Request, body: SshCredentials):
    """Set or replace the SSH credentials the deployer uses on this host (stored encrypted)."""
    secret = seal_ssh(request.app[SETTINGS], body)
    record = await find_host(request.app[STORE], request.match_info["uuid"])
    await update_host(request.app[STORE], record["uuid"], lambda r: {**r, "ssh_secret": secret})
    return web.Response(status=204)


@routes.route("POST", "/v1/hosts/{uuid}/ssh/reveal", response=SshCredentials)
async def reveal_ssh(request: web.Request):
    """The stored SSH credentials, for `hs deploy` on an operator's machine (a POST: never cached, never a GET)."""
    record = await find_host(request.app[STORE], request.match_info["uuid"])
    try:
        ssh = open_ssh(request.app[SETTINGS], record)
    except credentials.CredentialError as e:
        raise ApiError(409, "undecryptable", str(e)) from None
    if ssh is None:
        raise ApiError(404, "not_found", f"host {record['name']} has no stored SSH credentials")
    return ssh
