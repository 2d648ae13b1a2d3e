"""Ceph backup storage and primary storage (ZStack 0.9 "Ceph Integration"): add, query, mons, delete.

Adding one asks the cephagent of every mon for its cluster (all must report one fsid), checks the
named pools, creates the unnamed ones, and only then records the storage: a failed add leaves no
record and creates no pool. A primary storage also publishes its cluster's cephx key to every KVM
host (`cephsecret/<fsid>`, see docs/ceph.md). Queries ask the agents live (`?live=false` skips that).
"""

from __future__ import annotations

import asyncio
import time
import uuid as uuidlib
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from agentkit.model import CephSecretSpec, stream_key_ceph_secret
from cephagent.client import CephAgentClient, probe
from cephagent.errors import CephAgentError, InvalidMonUrl
from cephagent.monurl import MonUrl, parse_list
from cephagent.wire import ClusterInfo
from coordinator.api.appkeys import SETTINGS, STORE
from coordinator.api.hosts import NAME
from coordinator.api.http import ApiError, Routes
from coordinator.domain.ceph.storage import (
    KIND_NAMES,
    Agents,
    Kind,
    MonRecord,
    StorageRecord,
    api_error,
    load,
    load_all,
    secret_uuid,
)
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn

routes = Routes("ceph")
MonUrls = list[str] | str
POOL = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
RESERVE_TTL = 300  # seconds an add may take before its name reservation lapses
PS_POOLS = {"imageCache": "imageCachePoolName", "rootVolume": "rootVolumePoolName", "dataVolume": "dataVolumePoolName"}


class BackupStorageCreate(BaseModel):
    name: str = Field(pattern=NAME)
    monUrls: MonUrls = Field(description="ssh_username:ssh_password@mon_server_ip:[ssh_port][/?monPort=port], "
                             "a list or one comma-separated string")
    poolName: str | None = Field(None, pattern=POOL, description="existing pool to use; default: create one")
    zone: str = Field("default", pattern=NAME, description="Ceph backup and primary storage of a zone share a cluster")


class PrimaryStorageCreate(BaseModel):
    name: str = Field(pattern=NAME)
    zone: str = Field("default", pattern=NAME)
    monUrls: MonUrls
    imageCachePoolName: str | None = Field(None, pattern=POOL)
    rootVolumePoolName: str | None = Field(None, pattern=POOL)
    dataVolumePoolName: str | None = Field(None, pattern=POOL)


class MonsAdd(BaseModel):
    monUrls: MonUrls


class MonsRemove(BaseModel):
    monHostnames: str = Field(min_length=1, max_length=4000,
                              description="comma-separated mon_server_ip (all its mons) or mon_server_ip:monPort")


class LiveQuery(BaseModel):
    live: bool = Field(True, description="ask the agents for mon status, capacity and pools")


class MonOut(BaseModel):
    url: str = Field(description="the monUrl with its password redacted")
    hostname: str
    monPort: int
    sshPort: int
    sshUsername: str
    status: Literal["Connected", "Disconnected"] | None = None
    inQuorum: bool | None = None
    monName: str | None = None
    reason: str | None = None


class PoolOut(BaseModel):
    role: str
    name: str
    total: int | None = None
    available: int | None = None
    used: int | None = None
    stored: int | None = None
    objects: int | None = None


class CapacityOut(BaseModel):
    total: int
    available: int
    used: int


class StorageOut(BaseModel):
    uuid: str
    name: str
    type: Literal["CephBackupStorage", "CephPrimaryStorage"]
    zone: str
    fsid: str
    status: Literal["Connected", "Disconnected"] | None = None
    health: str | None = None
    mons: list[MonOut]
    capacity: CapacityOut | None = None
    pools: list[PoolOut]
    cephUser: str | None = None
    secretUuid: str | None = None
    createdAt: float


class BackupStorageList(BaseModel):
    backupStorages: list[StorageOut]


class PrimaryStorageList(BaseModel):
    primaryStorages: list[StorageOut]


def _mon_state(mon: MonRecord, fsid: str, answer: ClusterInfo | CephAgentError | None) -> MonOut:
    out = MonOut(url=mon.redacted, hostname=mon.host, monPort=mon.monPort, sshPort=mon.sshPort,
                 sshUsername=mon.sshUsername)
    if answer is None:
        return out
    if isinstance(answer, CephAgentError):
        return out.model_copy(update={"status": "Disconnected", "reason": answer.message})
    if answer.fsid != fsid:
        reason = f"its cephagent reports fsid {answer.fsid}, not the storage's {fsid}"
        return out.model_copy(update={"status": "Disconnected", "reason": reason})
    info = answer.mon_at(mon.host, mon.monPort)
    if info is None:
        reason = f"no mon of the cluster listens on {mon.addr}"
        return out.model_copy(update={"status": "Disconnected", "inQuorum": False, "reason": reason})
    return out.model_copy(update={"status": "Connected" if info.in_quorum else "Disconnected",
                                  "inQuorum": info.in_quorum, "monName": info.name,
                                  "reason": None if info.in_quorum else "not in quorum"})


def describe(rec: StorageRecord, answers: dict[str, ClusterInfo | CephAgentError] | None) -> StorageOut:
    """The API view of a storage; with the agents' `answers` (host -> cluster) its live state too."""
    mons = [_mon_state(m, rec.fsid, answers.get(m.host) if answers is not None else None) for m in rec.mons]
    info = next((a for a in (answers or {}).values() if isinstance(a, ClusterInfo) and a.fsid == rec.fsid), None)
    pools = []
    for role, name in rec.pools.items():
        stats = info.pool(name) if info else None
        pools.append(PoolOut(role=role, name=name, **(stats.model_dump(include={"total", "available", "used",
                                                                               "stored", "objects"}) if stats else {})))
    out = StorageOut(uuid=rec.uuid, name=rec.name, zone=rec.zone, fsid=rec.fsid, mons=mons, pools=pools,
                     type="CephBackupStorage" if rec.kind == "bs" else "CephPrimaryStorage",
                     cephUser=rec.cephUser, secretUuid=rec.secretUuid, createdAt=rec.createdAt)
    if answers is not None:
        out.status = "Connected" if any(m.status == "Connected" for m in mons) else "Disconnected"
        if info:
            out.health = info.health.status
            out.capacity = CapacityOut(**info.capacity.model_dump())
    return out


async def _show(request: web.Request, rec: StorageRecord, live: bool) -> StorageOut:
    if not live:
        return describe(rec, None)
    async with Agents(request.app[SETTINGS]) as agents:
        return describe(rec, await agents.survey(rec))


def _parse_mons(urls: MonUrls) -> list[MonUrl]:
    if isinstance(urls, list) and len(urls) > 16:
        raise ApiError(400, "invalid_mon_url", "at most 16 monUrls", "monUrls")
    try:
        return parse_list(urls)
    except InvalidMonUrl as e:
        raise ApiError(400, e.code, e.message, "monUrls") from None


async def _probe(agents: Agents, mons: list[MonUrl], expected: str | None = None) -> tuple[str, dict]:
    """The fsid all the mons' agents agree on; errors name the mon by its redacted monUrl."""
    clients: dict[str, CephAgentClient] = {m.redacted: agents.client(m.host, timeout=15) for m in mons}
    try:
        fsid, infos = await probe(clients, expected)
    except CephAgentError as e:
        if e.code == "agent_unreachable":  # a mistyped mon_server_ip is the caller's mistake
            raise ApiError(400, e.code, e.message, "monUrls") from None
        raise api_error(e, "monUrls") from None
    return fsid, {m.host: infos[m.redacted] for m in mons}


async def _check_cluster_rule(store: Store, kind: Kind, zone: str, fsid: str) -> None:
    """Ceph backup storage works only with Ceph primary storage of the same cluster (per zone)."""
    other: Kind = "ps" if kind == "bs" else "bs"
    peers = [r for r in await load_all(store, other) if r.zone == zone]
    if peers and all(p.fsid != fsid for p in peers):
        names = ", ".join(f"{p.name} (cluster {p.fsid})" for p in peers)
        raise ApiError(409, "cluster_mismatch", f"Ceph backup storage works only with Ceph primary storage in the "
                       f"same Ceph cluster: these mons report cluster {fsid}, but zone {zone} has "
                       f"{KIND_NAMES[other]} {names}", "monUrls")


async def _ensure_pools(agents: Agents, host: str, uuid: str, kind: Kind,
                        named: dict[str, tuple[str, str | None]]) -> dict[str, str]:
    """Check every named pool exists, then create the unnamed ones (role -> pool)."""
    client = agents.client(host)
    pools: dict[str, str] = {}
    for role, (param, name) in named.items():
        if name is None:
            continue
        try:
            await client.ensure_pool(name, must_exist=True)
        except CephAgentError as e:
            if e.code == "pool_not_found":
                raise ApiError(400, e.code, f"{param}: Ceph pool {name!r} does not exist", param) from None
            raise api_error(e, param) from None
        pools[role] = name
    for role, (param, name) in named.items():
        if name is None:
            pools[role] = f"hs-{kind}-{uuid}" + ("" if kind == "bs" else f"-{role.lower()}")
            try:
                await client.ensure_pool(pools[role], must_exist=False)
            except CephAgentError as e:
                raise api_error(e, param) from None
    return {role: pools[role] for role in named}


async def _add(request: web.Request, kind: Kind, name: str, zone: str, urls: MonUrls,
               named: dict[str, tuple[str, str | None]]) -> tuple[int, dict]:
    """Probe, check, create pools, record; the name is reserved under a lease meanwhile."""
    store, settings = request.app[STORE], request.app[SETTINGS]
    mons = _parse_mons(urls)
    uuid = uuidlib.uuid4().hex
    name_key = keys.ceph_storage_name(kind, name)
    async with Agents(settings) as agents:
        lease = await store.grant(RESERVE_TTL)  # revoking it drops the reservation unless the record was put
        try:
            rev = await store.commit(Txn().absent(name_key).put(name_key, uuid, lease))
            if rev is None:
                raise ApiError(409, "already_exists", f"{KIND_NAMES[kind]} {name} already exists", "name")
            fsid, answers = await _probe(agents, mons)
            await _check_cluster_rule(store, kind, zone, fsid)
            rec = StorageRecord(uuid=uuid, name=name, kind=kind, zone=zone, fsid=fsid, pools={},
                                mons=[MonRecord.of(m, settings) for m in mons], createdAt=time.time())
            txn = Txn().unchanged(name_key, rev).put(name_key, uuid).absent(keys.ceph_storage(kind, uuid))
            if kind == "ps":
                try:
                    secret = await agents.client(mons[0].host).secret()
                except CephAgentError as e:
                    raise api_error(e) from None
                rec.cephUser, rec.secretUuid = secret.user, secret_uuid(fsid)
                item = CephSecretSpec(uuid=rec.secretUuid, user=secret.user, key=secret.key, fsid=fsid)
                txn.put(keys.desired_all(stream_key_ceph_secret(fsid)), item.model_dump())
            rec.pools = await _ensure_pools(agents, mons[0].host, uuid, kind, named)
            if await store.commit(txn.put(keys.ceph_storage(kind, uuid), rec.model_dump())) is None:
                raise ApiError(409, "conflict", f"adding {KIND_NAMES[kind]} {name} took longer than "
                               f"{RESERVE_TTL}s; retry", "name")
        finally:
            await store.revoke(lease)
    return 201, describe(rec, answers).model_dump(mode="json")


@routes.route("POST", "/v1/ceph-backup-storage", body=BackupStorageCreate, response=StorageOut, status=201)
async def add_ceph_backup_storage(request: web.Request, body: BackupStorageCreate):
    """AddCephBackupStorage: mons of one cluster, an existing `poolName` or a new pool."""
    return await _add(request, "bs", body.name, body.zone, body.monUrls, {"image": ("poolName", body.poolName)})


@routes.route("POST", "/v1/ceph-primary-storage", body=PrimaryStorageCreate, response=StorageOut, status=201)
async def add_ceph_primary_storage(request: web.Request, body: PrimaryStorageCreate):
    """AddCephPrimaryStorage: mons of one cluster; named pools must exist, the others are created."""
    named = {role: (param, getattr(body, param)) for role, param in PS_POOLS.items()}
    return await _add(request, "ps", body.name, body.zone, body.monUrls, named)


async def _list(request: web.Request, kind: Kind, live: bool) -> list[StorageOut]:
    recs = await load_all(request.app[STORE], kind)
    if not live or not recs:
        return [describe(r, None) for r in recs]
    async with Agents(request.app[SETTINGS]) as agents:
        answers = await asyncio.gather(*(agents.survey(r) for r in recs))
    return [describe(r, a) for r, a in zip(recs, answers, strict=True)]


@routes.route("GET", "/v1/ceph-backup-storage", query=LiveQuery, response=BackupStorageList)
async def list_ceph_backup_storage(request: web.Request, query: LiveQuery):
    """QueryCephBackupStorage: every one with its mons' status, fsid, capacity and pool."""
    return BackupStorageList(backupStorages=await _list(request, "bs", query.live))


@routes.route("GET", "/v1/ceph-primary-storage", query=LiveQuery, response=PrimaryStorageList)
async def list_ceph_primary_storage(request: web.Request, query: LiveQuery):
    """QueryCephPrimaryStorage: every one with its mons' status, fsid, capacity and pools."""
    return PrimaryStorageList(primaryStorages=await _list(request, "ps", query.live))


@routes.route("GET", "/v1/ceph-backup-storage/{uuid}", query=LiveQuery, response=StorageOut)
async def get_ceph_backup_storage(request: web.Request, query: LiveQuery):
    """One Ceph backup storage (uuid or name)."""
    rec, _ = await load(request.app[STORE], "bs", request.match_info["uuid"])
    return await _show(request, rec, query.live)


@routes.route("GET", "/v1/ceph-primary-storage/{uuid}", query=LiveQuery, response=StorageOut)
async def get_ceph_primary_storage(request: web.Request, query: LiveQuery):
    """One Ceph primary storage (uuid or name)."""
    rec, _ = await load(request.app[STORE], "ps", request.match_info["uuid"])
    return await _show(request, rec, query.live)


async def _add_mons(request: web.Request, kind: Kind, body: MonsAdd) -> StorageOut:
    store, settings = request.app[STORE], request.app[SETTINGS]
    new = _parse_mons(body.monUrls)
    async with Agents(settings) as agents:
        for _ in range(5):
            rec, entry = await load(store, kind, request.match_info["uuid"])
            have = {(m.host, m.monPort) for m in rec.mons}
            dup = [m.redacted for m in new if (m.host, m.mon_port) in have]
            if dup:
                raise ApiError(409, "already_exists", f"{KIND_NAMES[kind]} {rec.name} already has mon "
                               f"{', '.join(dup)}", "monUrls")
            await _probe(agents, new, expected=rec.fsid)
            rec.mons += [MonRecord.of(m, settings) for m in new]
            txn = Txn().unchanged(entry.key, entry.mod_revision).put(entry.key, rec.model_dump())
            if await store.commit(txn) is not None:
                return describe(rec, await agents.survey(rec))
    raise ApiError(409, "conflict", f"{KIND_NAMES[kind]} keeps changing concurrently, retry")


def _matches(mon: MonRecord, ref: str) -> bool:
    return ref in (mon.host, mon.literal, mon.addr)


async def _remove_mons(request: web.Request, kind: Kind, query: MonsRemove) -> StorageOut:
    store = request.app[STORE]
    refs = [r.strip() for r in query.monHostnames.split(",") if r.strip()]
    if not refs:
        raise ApiError(400, "invalid", "monHostnames names no mon", "monHostnames")
    for _ in range(5):
        rec, entry = await load(store, kind, request.match_info["uuid"])
        unknown = [r for r in refs if not any(_matches(m, r) for m in rec.mons)]
        if unknown:
            raise ApiError(400, "not_found", f"{KIND_NAMES[kind]} {rec.name} has no mon {', '.join(unknown)} "
                           f"(its mons: {', '.join(m.addr for m in rec.mons)})", "monHostnames")
        keep = [m for m in rec.mons if not any(_matches(m, r) for r in refs)]
        if not keep:
            raise ApiError(409, "last_mon", f"{KIND_NAMES[kind]} {rec.name} needs at least one mon; add another "
                           "before removing these", "monHostnames")
        rec.mons = keep
        txn = Txn().unchanged(entry.key, entry.mod_revision).put(entry.key, rec.model_dump())
        if await store.commit(txn) is not None:
            return describe(rec, None)
    raise ApiError(409, "conflict", f"{KIND_NAMES[kind]} keeps changing concurrently, retry")


@routes.route("POST", "/v1/ceph-backup-storage/{uuid}/mons", body=MonsAdd, response=StorageOut)
async def add_mon_to_ceph_backup_storage(request: web.Request, body: MonsAdd):
    """AddMonToCephBackupStorage: the new mons must report the storage's fsid."""
    return await _add_mons(request, "bs", body)


@routes.route("POST", "/v1/ceph-primary-storage/{uuid}/mons", body=MonsAdd, response=StorageOut)
async def add_mon_to_ceph_primary_storage(request: web.Request, body: MonsAdd):
    """AddMonToCephPrimaryStorage: the new mons must report the storage's fsid."""
    return await _add_mons(request, "ps", body)


@routes.route("DELETE", "/v1/ceph-backup-storage/{uuid}/mons", query=MonsRemove, response=StorageOut)
async def remove_mon_from_ceph_backup_storage(request: web.Request, query: MonsRemove):
    """RemoveMonFromCephBackupStorage monHostnames=ip[:monPort],..."""
    return await _remove_mons(request, "bs", query)


@routes.route("DELETE", "/v1/ceph-primary-storage/{uuid}/mons", query=MonsRemove, response=StorageOut)
async def remove_mon_from_ceph_primary_storage(request: web.Request, query: MonsRemove):
    """RemoveMonFromCephPrimaryStorage monHostnames=ip[:monPort],..."""
    return await _remove_mons(request, "ps", query)


async def _delete(request: web.Request, kind: Kind) -> web.Response:
    """Forget a storage (its pools and their data stay in Ceph); refused while images or volumes use it."""
    store = request.app[STORE]
    rec, entry = await load(store, kind, request.match_info["uuid"])
    field, prefix = ("backupStorageUuid", keys.IMAGES) if kind == "bs" else ("primaryStorageUuid", keys.VOLUMES)
    users, _ = await store.list(prefix)
    names = [u.value["name"] for u in users if u.value.get(field) == rec.uuid]
    if names:
        what = "images" if kind == "bs" else "volumes"
        raise ApiError(409, "in_use", f"{KIND_NAMES[kind]} {rec.name} still holds {len(names)} {what}: "
                       f"{', '.join(names[:10])}; delete them first")
    txn = Txn().unchanged(entry.key, entry.mod_revision).delete(entry.key)
    txn.delete(keys.ceph_storage_name(kind, rec.name))
    if kind == "ps" and not any(p.fsid == rec.fsid and p.uuid != rec.uuid for p in await load_all(store, "ps")):
        txn.delete(keys.desired_all(stream_key_ceph_secret(rec.fsid)))
    if await store.commit(txn) is None:
        raise ApiError(409, "conflict", f"{KIND_NAMES[kind]} {rec.name} changed concurrently, retry")
    return web.Response(status=204)


@routes.route("DELETE", "/v1/ceph-backup-storage/{uuid}", status=204)
async def delete_ceph_backup_storage(request: web.Request):
    """Delete a Ceph backup storage without images (its pool is kept)."""
    return await _delete(request, "bs")


@routes.route("DELETE", "/v1/ceph-primary-storage/{uuid}", status=204)
async def delete_ceph_primary_storage(request: web.Request):
    """Delete a Ceph primary storage without volumes (its pools are kept)."""
    return await _delete(request, "ps")
