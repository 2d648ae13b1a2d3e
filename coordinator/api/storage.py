"""HTTP edge of file-based primary storage (LocalStorage, SharedMountPoint): add, list and show with each
host's report and the reserved bytes, delete (coordinator/domain/filestorage/storages.py). Ceph primary
storage has its own collection (`/v1/ceph-primary-storage`); the `volumes` resource serves both."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from coordinator.api.appkeys import STORE
from coordinator.api.http import Routes
from coordinator.domain.filestorage import storages
from coordinator.domain.filestorage.records import FileStorageRecord
from coordinator.domain.filestorage.storages import FileStorageAdd, FileStorageView

routes = Routes("primary storage")


class FileStorageList(BaseModel):
    primary_storages: list[FileStorageView]


@routes.route("POST", "/v1/primary-storage", body=FileStorageAdd, response=FileStorageRecord, status=201)
async def add_storage(request: web.Request, body: FileStorageAdd) -> FileStorageRecord:
    """Add a LocalStorage (a directory on each host) or a SharedMountPoint (a pre-mounted shared path)."""
    return await storages.add(request.app[STORE], body)


@routes.route("GET", "/v1/primary-storage", response=FileStorageList)
async def list_storages(request: web.Request) -> FileStorageList:
    """Every file-based primary storage with what each host reports of it (state, capacity) and reserves."""
    return FileStorageList(primary_storages=await storages.views(request.app[STORE]))


@routes.route("GET", "/v1/primary-storage/{uuid}", response=FileStorageView)
async def show_storage(request: web.Request) -> FileStorageView:
    """One storage (by uuid or name) with its hosts' reports and reservations."""
    return await storages.show(request.app[STORE], request.match_info["uuid"])


@routes.route("DELETE", "/v1/primary-storage/{uuid}", response=FileStorageRecord)
async def delete_storage(request: web.Request) -> FileStorageRecord:
    """Forget a storage no volume is left on (the files on the hosts stay)."""
    return await storages.delete(request.app[STORE], request.match_info["uuid"])
