"""Ceph storage as the coordinator sees it: records in etcd, and how it reaches the cephagent of a mon.

A storage (backup `bs` or primary `ps`) is a list of mons, the cluster's fsid and its pools. The
coordinator calls the cephagent at `http://<mon_server_ip>:<cephagent_port>` with the bearer token
`cephagent_token` (both coordinator settings): one agent per mon host, whatever the mon port. Any
answering agent of a storage serves its calls; the next mon's agent is tried when one is unreachable.
The SSH password of a monUrl is kept Fernet-encrypted (coordinator/credentials.py) and never leaves
the coordinator; users only ever see the redacted monUrl.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

import aiohttp
from pydantic import BaseModel

from cephagent.client import AgentUnreachable, CephAgentClient
from cephagent.errors import CephAgentError
from cephagent.monurl import MonUrl
from cephagent.wire import ClusterInfo
from coordinator.api.http import ApiError
from coordinator.domain import credentials
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store
from coordinator.settings import CoordinatorSettings

Kind = Literal["bs", "ps"]
KIND_NAMES: dict[str, str] = {"bs": "Ceph backup storage", "ps": "Ceph primary storage"}
T = TypeVar("T")
# libvirt secrets of one cluster share a uuid, so every primary storage of that cluster names the same one
SECRET_NAMESPACE = uuidlib.UUID("6c1b2f0e-5d0a-4f59-9a49-3a1c0e7f2b11")
FAILOVER_CODES = {"agent_unreachable", "cluster_unavailable"}


class MonRecord(BaseModel):
    """One mon server of a storage; `sshPassword` is a Fernet token, never returned by the API."""

    host: str
    monPort: int
    sshPort: int
    sshUsername: str
    sshPassword: str

    @property
    def literal(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def addr(self) -> str:
        """`host:monPort`, the form of RbdDisk.monitors and of `monHostnames` entries."""
        return f"{self.literal}:{self.monPort}"

    @property
    def redacted(self) -> str:
        return f"{self.sshUsername}:***@{self.literal}:{self.sshPort}/?monPort={self.monPort}"

    @classmethod
    def of(cls, url: MonUrl, settings: CoordinatorSettings) -> MonRecord:
        secret = credentials.encrypt(settings.secret_key, settings.admin_token, url.ssh_password)
        return cls(host=url.host, monPort=url.mon_port, sshPort=url.ssh_port, sshUsername=url.ssh_username,
                   sshPassword=secret)


class StorageRecord(BaseModel):
    """What etcd holds for a storage; `pools` maps a role (image, imageCache, rootVolume, dataVolume) to a pool."""

    uuid: str
    name: str
    kind: Kind
    zone: str
    fsid: str
    mons: list[MonRecord]
    pools: dict[str, str]
    cephUser: str | None = None
    secretUuid: str | None = None
    createdAt: float

    @property
    def monitors(self) -> list[str]:
        return [m.addr for m in self.mons]


def secret_uuid(fsid: str) -> str:
    return str(uuidlib.uuid5(SECRET_NAMESPACE, fsid))


def agent_token(settings: CoordinatorSettings) -> str:
    if not settings.cephagent_token:
        raise ApiError(409, "not_configured", "Ceph storage needs the coordinator setting cephagent_token "
                       "(the token the cephagents on the mon hosts were deployed with)")
    return settings.cephagent_token


def agent_url(settings: CoordinatorSettings, host: str) -> str:
    literal = f"[{host}]" if ":" in host else host
    return f"http://{literal}:{settings.cephagent_port}"


def api_error(e: CephAgentError, field: str | None = None) -> ApiError:
    """An agent's failure as the coordinator's answer: its 4xx as they are, a rejected token as 502."""
    if e.code == "unauthorized":
        return ApiError(502, "agent_unauthorized", f"a cephagent rejected the coordinator's cephagent_token: "
                        f"{e.message}")
    status = e.status if 400 <= e.status < 600 else 502
    if status == 500:
        status = 502
    return ApiError(status, e.code, e.message, field if field is not None else e.field)


class Agents:
    """The cephagent clients of one API call, sharing one HTTP session; use as `async with`."""

    def __init__(self, settings: CoordinatorSettings, timeout: float = 60):
        self.settings = settings
        self.token = agent_token(settings)
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Agents:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def client(self, host: str, timeout: float | None = None) -> CephAgentClient:
        return CephAgentClient(agent_url(self.settings, host), self.token, self._session, timeout or self.timeout)

    async def call(self, record: StorageRecord, fn: Callable[[CephAgentClient], Awaitable[T]],
                   first_host: str | None = None) -> tuple[T, str]:
        """`fn` on the first agent of the storage that answers; the result and that agent's mon host.

        Only an unreachable agent or cluster moves on to the next one; any other error is the answer.
        """
        hosts = list(dict.fromkeys([first_host] if first_host else []) | dict.fromkeys(m.host for m in record.mons))
        last: CephAgentError | None = None
        for host in hosts:
            try:
                return await fn(self.client(host)), host
            except CephAgentError as e:
                if e.code not in FAILOVER_CODES:
                    raise api_error(e) from e
                last = e
        assert last is not None
        raise ApiError(last.status if last.status >= 500 else 502, last.code,
                       f"no cephagent of {KIND_NAMES[record.kind]} {record.name} answered: {last.message}")

    async def survey(self, record: StorageRecord, timeout: float = 10) -> dict[str, ClusterInfo | CephAgentError]:
        """Every mon host's agent asked for the cluster at once: host -> its answer or its error."""
        hosts = list(dict.fromkeys(m.host for m in record.mons))
        answers = await asyncio.gather(*(self.client(h, timeout).cluster() for h in hosts), return_exceptions=True)
        out: dict[str, ClusterInfo | CephAgentError] = {}
        for host, answer in zip(hosts, answers, strict=True):
            if isinstance(answer, BaseException) and not isinstance(answer, CephAgentError):
                if isinstance(answer, asyncio.CancelledError | KeyboardInterrupt):
                    raise answer
                answer = AgentUnreachable(url=agent_url(self.settings, host), reason=repr(answer))
            out[host] = answer
        return out


async def load(store: Store, kind: Kind, ref: str, field: str | None = None) -> tuple[StorageRecord, Entry]:
    """A storage by uuid or name; 404 (or 400 naming `field` when the reference came in a body)."""
    entry = await store.get(keys.ceph_storage(kind, ref))
    if entry is None:
        named = await store.get(keys.ceph_storage_name(kind, ref))
        if named is not None and not named.lease:
            entry = await store.get(keys.ceph_storage(kind, named.value))
    if entry is None:
        raise ApiError(400 if field else 404, "not_found", f"{KIND_NAMES[kind]} {ref} does not exist", field)
    return StorageRecord.model_validate(entry.value), entry


async def load_all(store: Store, kind: Kind) -> list[StorageRecord]:
    entries, _ = await store.list(keys.ceph_storages(kind))
    return [StorageRecord.model_validate(e.value) for e in entries]
