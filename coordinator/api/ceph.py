"""HTTP edge of Ceph backup storage and primary storage (ZStack 0.9 "Ceph Integration"): add, query,
mons, delete. The rules live in coordinator/domain/ceph/ (storage.py, mons.py, views.py); handlers parse
and call one domain function, which shows a storage with what its agents answer (`?live=false` skips
asking them).

Field names are snake_case; the seeds' camelCase names (`monUrls`, `poolName`, ...) are accepted as
aliases in requests (coordinator/domain/ceph/naming.py). Adding storage or mons first has the mons' missing
cephagents deployed with the monUrls' SSH credentials (coordinator/domain/ceph/monhosts.py); `?wait=` is how
long the request waits for them.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field

from coordinator.api.appkeys import SETTINGS, STORE
from coordinator.api.http import Routes
from coordinator.api.vms import MAX_WAIT
from coordinator.domain.ceph import mons, storage
from coordinator.domain.ceph.mons import MAX_MONS, MonUrls
from coordinator.domain.ceph.naming import SeedNamedRequest
from coordinator.domain.ceph.records import Kind
from coordinator.domain.ceph.views import StorageView
from coordinator.domain.fields import Name
from coordinator.domain.hosts import SshHostKeys

routes = Routes("ceph")
POOL = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
PS_POOLS = {"imageCache": "image_cache_pool_name", "rootVolume": "root_volume_pool_name",
            "dataVolume": "data_volume_pool_name"}  # pool role -> the request field naming its pool
MON_URLS = ("ssh_username:ssh_password@mon_server_ip:[ssh_port][/?monPort=port], a list or one comma-separated "
            "string")
MonHostKeys = Annotated[dict[Annotated[str, Field(max_length=253)], SshHostKeys], Field(
    max_length=MAX_MONS, description="mon_server_ip -> its SSH public host keys ('<type> <base64>'): the only ones "
    "the deploy of its cephagent accepts, recorded with the ceph host a mon is registered as (`hs ceph` reads them)")]


class BackupStorageCreate(SeedNamedRequest):
    name: Name
    mon_urls: MonUrls = Field(description=MON_URLS)
    ssh_host_keys: MonHostKeys | None = None
    pool_name: str | None = Field(None, pattern=POOL, description="existing pool to use; default: create one")
    zone: Name = Field("default", description="Ceph backup and primary storage of a zone share a cluster")


class PrimaryStorageCreate(SeedNamedRequest):
    name: Name
    zone: Name = "default"
    mon_urls: MonUrls = Field(description=MON_URLS)
    ssh_host_keys: MonHostKeys | None = None
    image_cache_pool_name: str | None = Field(None, pattern=POOL)
    root_volume_pool_name: str | None = Field(None, pattern=POOL)
    data_volume_pool_name: str | None = Field(None, pattern=POOL)


class MonsAdd(SeedNamedRequest):
    mon_urls: MonUrls = Field(description=MON_URLS)
    ssh_host_keys: MonHostKeys | None = None


class AgentsWait(BaseModel):
    wait: float = Field(0, ge=0, le=MAX_WAIT, description="seconds to wait for the cephagents deployed to mons that "
                        "had none to be Connected (else 409 agents_deploying)")


class MonsRemove(SeedNamedRequest):
    mon_hostnames: str = Field(min_length=1, max_length=4000,
                               description="comma-separated mon_server_ip (all its mons) or mon_server_ip:monPort")


class LiveQuery(BaseModel):
    live: bool = Field(True, description="ask the agents for mon status, capacity and pools")


class BackupStorageList(BaseModel):
    backup_storages: list[StorageView]


class PrimaryStorageList(BaseModel):
    primary_storages: list[StorageView]


@routes.route("POST", "/v1/ceph-backup-storage", body=BackupStorageCreate, query=AgentsWait, response=StorageView,
              status=201)
async def add_ceph_backup_storage(request: web.Request, body: BackupStorageCreate, query: AgentsWait) -> StorageView:
    """AddCephBackupStorage: mons of one cluster, an existing `pool_name` or a new pool."""
    return await storage.add(request.app[STORE], request.app[SETTINGS], "bs", body.name, body.zone, body.mon_urls,
                             {"image": ("pool_name", body.pool_name)}, host_keys=body.ssh_host_keys, wait=query.wait)


@routes.route("POST", "/v1/ceph-primary-storage", body=PrimaryStorageCreate, query=AgentsWait, response=StorageView,
              status=201)
async def add_ceph_primary_storage(request: web.Request, body: PrimaryStorageCreate, query: AgentsWait) -> StorageView:
    """AddCephPrimaryStorage: mons of one cluster; named pools must exist, the others are created."""
    named = {role: (param, getattr(body, param)) for role, param in PS_POOLS.items()}
    return await storage.add(request.app[STORE], request.app[SETTINGS], "ps", body.name, body.zone, body.mon_urls,
                             named, host_keys=body.ssh_host_keys, wait=query.wait)


@routes.route("GET", "/v1/ceph-backup-storage", query=LiveQuery, response=BackupStorageList)
async def list_ceph_backup_storage(request: web.Request, query: LiveQuery) -> BackupStorageList:
    """QueryCephBackupStorage: every one with its mons' status, fsid, capacity and pool."""
    return BackupStorageList(backup_storages=await storage.list_all(request.app[STORE], request.app[SETTINGS], "bs",
                                                                    query.live))


@routes.route("GET", "/v1/ceph-primary-storage", query=LiveQuery, response=PrimaryStorageList)
async def list_ceph_primary_storage(request: web.Request, query: LiveQuery) -> PrimaryStorageList:
    """QueryCephPrimaryStorage: every one with its mons' status, fsid, capacity and pools."""
    return PrimaryStorageList(primary_storages=await storage.list_all(request.app[STORE], request.app[SETTINGS], "ps",
                                                                      query.live))


@routes.route("GET", "/v1/ceph-backup-storage/{uuid}", query=LiveQuery, response=StorageView)
async def get_ceph_backup_storage(request: web.Request, query: LiveQuery) -> StorageView:
    """One Ceph backup storage (uuid or name)."""
    return await storage.show(request.app[STORE], request.app[SETTINGS], "bs", request.match_info["uuid"], query.live)


@routes.route("GET", "/v1/ceph-primary-storage/{uuid}", query=LiveQuery, response=StorageView)
async def get_ceph_primary_storage(request: web.Request, query: LiveQuery) -> StorageView:
    """One Ceph primary storage (uuid or name)."""
    return await storage.show(request.app[STORE], request.app[SETTINGS], "ps", request.match_info["uuid"], query.live)


async def _add_mons(request: web.Request, kind: Kind, body: MonsAdd, query: AgentsWait) -> StorageView:
    return await mons.add_mons(request.app[STORE], request.app[SETTINGS], kind, request.match_info["uuid"],
                               body.mon_urls, host_keys=body.ssh_host_keys, wait=query.wait)


@routes.route("POST", "/v1/ceph-backup-storage/{uuid}/mons", body=MonsAdd, query=AgentsWait, response=StorageView)
async def add_mon_to_ceph_backup_storage(request: web.Request, body: MonsAdd, query: AgentsWait) -> StorageView:
    """AddMonToCephBackupStorage: the new mons must report the storage's fsid."""
    return await _add_mons(request, "bs", body, query)


@routes.route("POST", "/v1/ceph-primary-storage/{uuid}/mons", body=MonsAdd, query=AgentsWait, response=StorageView)
async def add_mon_to_ceph_primary_storage(request: web.Request, body: MonsAdd, query: AgentsWait) -> StorageView:
    """AddMonToCephPrimaryStorage: the new mons must report the storage's fsid."""
    return await _add_mons(request, "ps", body, query)


async def _remove_mons(request: web.Request, kind: Kind, query: MonsRemove) -> StorageView:
    refs = [r.strip() for r in query.mon_hostnames.split(",") if r.strip()]
    return await mons.remove_mons(request.app[STORE], kind, request.match_info["uuid"], refs)


@routes.route("DELETE", "/v1/ceph-backup-storage/{uuid}/mons", query=MonsRemove, response=StorageView)
async def remove_mon_from_ceph_backup_storage(request: web.Request, query: MonsRemove) -> StorageView:
    """RemoveMonFromCephBackupStorage mon_hostnames=ip[:monPort],..."""
    return await _remove_mons(request, "bs", query)


@routes.route("DELETE", "/v1/ceph-primary-storage/{uuid}/mons", query=MonsRemove, response=StorageView)
async def remove_mon_from_ceph_primary_storage(request: web.Request, query: MonsRemove) -> StorageView:
    """RemoveMonFromCephPrimaryStorage mon_hostnames=ip[:monPort],..."""
    return await _remove_mons(request, "ps", query)


@routes.route("DELETE", "/v1/ceph-backup-storage/{uuid}", status=204)
async def delete_ceph_backup_storage(request: web.Request) -> None:
    """Delete a Ceph backup storage without images (its pool is kept)."""
    await storage.delete(request.app[STORE], "bs", request.match_info["uuid"])


@routes.route("DELETE", "/v1/ceph-primary-storage/{uuid}", status=204)
async def delete_ceph_primary_storage(request: web.Request) -> None:
    """Delete a Ceph primary storage without volumes (its pools are kept)."""
    await storage.delete(request.app[STORE], "ps", request.match_info["uuid"])
