"""HTTP edge of the one `volumes` resource, on every primary storage type: a root volume from an image
(an RBD clone on Ceph, a qcow2 overlay on the cached image on LocalStorage/SharedMountPoint), blank data
volumes (or from a DataVolumeTemplate), resize, flatten (Ceph), snapshots by name, delete; each one
carries the disk a VM attaches. The rules live in coordinator/domain/volumes.py and the families'
modules it dispatches to."""

from __future__ import annotations

import re
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field, RootModel

from agentkit.errors import Invalid
from coordinator.api.appkeys import SETTINGS, STORE
from coordinator.api.auth import CALLER
from coordinator.api.http import Routes
from coordinator.domain import volumes
from coordinator.domain.ceph.naming import SeedNamedRequest
from coordinator.domain.ceph.views import VolumeView as CephVolume
from coordinator.domain.fields import Name, Ref
from coordinator.domain.filestorage import migration
from coordinator.domain.filestorage.volumes import FileVolumeView as FileVolume

routes = Routes("volumes")
SNAP = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


class AnyVolumeView(RootModel[CephVolume | FileVolume]):
    """A Ceph volume (with its RbdDisk) or a LocalStorage/SharedMountPoint one (with its VolumeDisk)."""


class VolumeList(BaseModel):
    volumes: list[CephVolume | FileVolume]


class VolumeCreate(SeedNamedRequest):
    name: Name
    primary_storage_uuid: Ref
    image_uuid: Ref | None = Field(None, description="a root volume cloned from this image (a data volume from a "
                                   "DataVolumeTemplate); else an empty data volume")
    size: int | None = Field(None, gt=0, le=1 << 50, description="bytes; required for empty data volumes, a "
                             "volume from an image grows to it (never below the image's size)")
    type: Literal["Root", "Data"] | None = Field(None, description="default: Root with image_uuid (a "
                                                 "RootVolumeTemplate), else Data; Data with image_uuid clones a "
                                                 "DataVolumeTemplate")
    host_uuid: Ref | None = Field(None, description="LocalStorage: the host it lives on (default: placement)")


class VolumeQuery(SeedNamedRequest):
    primary_storage_uuid: str | None = Field(None, max_length=128, description="only this primary storage's "
                                             "volumes (uuid or name)")


class LiveQuery(BaseModel):
    live: bool = True


class Resize(SeedNamedRequest):
    size: int = Field(gt=0, le=1 << 50)
    allow_shrink: bool = Field(False, description="shrinking loses the data past the new end")


class VolumeMigrate(SeedNamedRequest):
    dest_host_uuid: Ref = Field(description="the host to move it to (uuid or name); the seed's destHostUuid")


class SnapshotCreate(BaseModel):
    name: str = Field(pattern=SNAP)
    protect: bool = False


@routes.route("POST", "/v1/volumes", body=VolumeCreate, response=AnyVolumeView, status=201)
async def create_volume(request: web.Request, body: VolumeCreate) -> volumes.View:
    """A root volume (COW clone of `image_uuid`) or an empty data volume (`size`) on Ceph primary storage."""
    return await volumes.create(request.app[STORE], request.app[SETTINGS], body.name, body.primary_storage_uuid,
                                body.image_uuid, body.size, body.type, body.host_uuid)


@routes.route("GET", "/v1/volumes", query=VolumeQuery, response=VolumeList)
async def list_volumes(request: web.Request, query: VolumeQuery) -> VolumeList:
    """All volumes (optionally of one primary storage) with their RbdDisk."""
    return VolumeList(volumes=await volumes.list_all(request.app[STORE], query.primary_storage_uuid))


@routes.route("GET", "/v1/volumes/{uuid}", query=LiveQuery, response=AnyVolumeView)
async def get_volume(request: web.Request, query: LiveQuery) -> volumes.View:
    """One volume: its record, the RbdDisk to attach it, and (live) the agent's view with its parent."""
    return await volumes.show(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"], query.live)


@routes.route("POST", "/v1/volumes/{uuid}/resize", body=Resize, response=AnyVolumeView)
async def resize_volume(request: web.Request, body: Resize) -> volumes.View:
    """Grow a volume (shrinking needs allow_shrink)."""
    return await volumes.resize(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"], body.size,
                                body.allow_shrink)


@routes.route("POST", "/v1/volumes/{uuid}/flatten", response=AnyVolumeView)
async def flatten_volume(request: web.Request) -> volumes.View:
    """Copy the image's data into the volume: it no longer depends on the image."""
    return await volumes.flatten(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"])


@routes.route("POST", "/v1/volumes/{uuid}/snapshots", body=SnapshotCreate, response=AnyVolumeView, status=201)
async def create_volume_snapshot(request: web.Request, body: SnapshotCreate) -> volumes.View:
    """Snapshot a volume (protected snapshots can only be deleted while nothing is cloned from them)."""
    return await volumes.snapshot(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"], body.name,
                                  body.protect)


def _snapshot_name(request: web.Request) -> str:
    snap = request.match_info["snapshot"]
    if not re.match(SNAP, snap):
        raise Invalid(f"{snap!r} is not a snapshot name", field="snapshot")
    return snap


@routes.route("POST", "/v1/volumes/{uuid}/snapshots/{snapshot}/rollback", response=AnyVolumeView)
async def rollback_volume_snapshot(request: web.Request) -> volumes.View:
    """Roll a volume back to a snapshot (stop its VM first)."""
    return await volumes.rollback(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"],
                                  _snapshot_name(request))


@routes.route("DELETE", "/v1/volumes/{uuid}/snapshots/{snapshot}", response=AnyVolumeView)
async def delete_volume_snapshot(request: web.Request) -> volumes.View:
    """Delete a snapshot; refused while clones depend on it."""
    return await volumes.delete_snapshot(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"],
                                         _snapshot_name(request))


@routes.route("DELETE", "/v1/volumes/{uuid}", status=204)
async def delete_volume(request: web.Request) -> None:
    """Delete a volume; refused while a VM uses it, clones depend on it or it has protected snapshots."""
    await volumes.delete(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"])


@routes.route("POST", "/v1/volumes/{uuid}/migrate", body=VolumeMigrate, response=AnyVolumeView, status=202)
async def migrate_volume(request: web.Request, body: VolumeMigrate) -> volumes.View:
    """Move a LocalStorage volume to another host (seed LocalStorageMigrateVolume): a root volume while its
    VM is stopped (the VM follows), a data volume while detached; `progress` shows the copy."""
    return await volumes.migrate(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"],
                                 body.dest_host_uuid)


@routes.route("POST", "/v1/volumes/{uuid}/migration/tickets", response=migration.VolumeTicket, status=201,
              auth="anyhost")
async def migration_ticket(request: web.Request) -> migration.VolumeTicket:
    """A migration's target host: where and with what it reads the volume's files from the source."""
    return await migration.ticket(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"],
                                  request[CALLER].subject)
