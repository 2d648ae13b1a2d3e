"""HTTP edge of volumes on Ceph primary storage: root volumes cloned copy-on-write from an image, empty
data volumes, resize, flatten, snapshots, delete; each one carries the RbdDisk a VM attaches. The rules
live in coordinator/domain/ceph/volumes.py."""

from __future__ import annotations

import re

from aiohttp import web
from pydantic import BaseModel, Field

from agentkit.errors import Invalid
from coordinator.api.appkeys import SETTINGS, STORE
from coordinator.api.http import Routes
from coordinator.domain.ceph import volumes
from coordinator.domain.ceph.naming import SeedNamedRequest
from coordinator.domain.ceph.views import VolumeView
from coordinator.domain.fields import NAME

routes = Routes("volumes")
SNAP = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


class VolumeList(BaseModel):
    volumes: list[VolumeView]


class VolumeCreate(SeedNamedRequest):
    name: str = Field(pattern=NAME)
    primary_storage_uuid: str = Field(min_length=1)
    image_uuid: str | None = Field(None, description="a root volume cloned from this image; else an empty data "
                                   "volume")
    size: int | None = Field(None, gt=0, le=1 << 50, description="bytes; required for data volumes, a root volume "
                             "grows to it (never below the image's size)")


class VolumeQuery(SeedNamedRequest):
    primary_storage_uuid: str | None = None


class LiveQuery(BaseModel):
    live: bool = True


class Resize(SeedNamedRequest):
    size: int = Field(gt=0, le=1 << 50)
    allow_shrink: bool = Field(False, description="shrinking loses the data past the new end")


class SnapshotCreate(BaseModel):
    name: str = Field(pattern=SNAP)
    protect: bool = False


@routes.route("POST", "/v1/volumes", body=VolumeCreate, response=VolumeView, status=201)
async def create_volume(request: web.Request, body: VolumeCreate) -> VolumeView:
    """A root volume (COW clone of `image_uuid`) or an empty data volume (`size`) on Ceph primary storage."""
    return await volumes.create(request.app[STORE], request.app[SETTINGS], body.name, body.primary_storage_uuid,
                                body.image_uuid, body.size)


@routes.route("GET", "/v1/volumes", query=VolumeQuery, response=VolumeList)
async def list_volumes(request: web.Request, query: VolumeQuery) -> VolumeList:
    """All volumes (optionally of one primary storage) with their RbdDisk."""
    return VolumeList(volumes=await volumes.list_all(request.app[STORE], query.primary_storage_uuid))


@routes.route("GET", "/v1/volumes/{uuid}", query=LiveQuery, response=VolumeView)
async def get_volume(request: web.Request, query: LiveQuery) -> VolumeView:
    """One volume: its record, the RbdDisk to attach it, and (live) the agent's view with its parent."""
    return await volumes.show(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"], query.live)


@routes.route("POST", "/v1/volumes/{uuid}/resize", body=Resize, response=VolumeView)
async def resize_volume(request: web.Request, body: Resize) -> VolumeView:
    """Grow a volume (shrinking needs allow_shrink)."""
    return await volumes.resize(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"], body.size,
                                body.allow_shrink)


@routes.route("POST", "/v1/volumes/{uuid}/flatten", response=VolumeView)
async def flatten_volume(request: web.Request) -> VolumeView:
    """Copy the image's data into the volume: it no longer depends on the image."""
    return await volumes.flatten(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"])


@routes.route("POST", "/v1/volumes/{uuid}/snapshots", body=SnapshotCreate, response=VolumeView, status=201)
async def create_volume_snapshot(request: web.Request, body: SnapshotCreate) -> VolumeView:
    """Snapshot a volume (protected snapshots can only be deleted while nothing is cloned from them)."""
    return await volumes.snapshot(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"], body.name,
                                  body.protect)


def _snapshot_name(request: web.Request) -> str:
    snap = request.match_info["snapshot"]
    if not re.match(SNAP, snap):
        raise Invalid(f"{snap!r} is not a snapshot name", field="snapshot")
    return snap


@routes.route("POST", "/v1/volumes/{uuid}/snapshots/{snapshot}/rollback", response=VolumeView)
async def rollback_volume_snapshot(request: web.Request) -> VolumeView:
    """Roll a volume back to a snapshot (stop its VM first)."""
    return await volumes.rollback(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"],
                                  _snapshot_name(request))


@routes.route("DELETE", "/v1/volumes/{uuid}/snapshots/{snapshot}", response=VolumeView)
async def delete_volume_snapshot(request: web.Request) -> VolumeView:
    """Delete a snapshot; refused while clones depend on it."""
    return await volumes.delete_snapshot(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"],
                                         _snapshot_name(request))


@routes.route("DELETE", "/v1/volumes/{uuid}", status=204)
async def delete_volume(request: web.Request) -> web.Response:
    """Delete a volume; refused while a VM uses it, clones depend on it or it has protected snapshots."""
    await volumes.delete(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"])
    return web.Response(status=204)
