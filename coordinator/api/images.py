"""HTTP edge of the one `images` resource (Ceph backup storage and image stores alike): add from a URL
(answered at once, progress on GET), list, show, delete, and read tickets for hosts. The rules live in
coordinator/domain/images/ (catalog.py) and coordinator/domain/imagestore/images.py."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field, model_validator

from coordinator.api.appkeys import SETTINGS, STORE
from coordinator.api.auth import CALLER
from coordinator.api.http import Routes
from coordinator.domain.ceph.naming import SeedNamedRequest
from coordinator.domain.fields import NAME, SourceUrl
from coordinator.domain.images import catalog
from coordinator.domain.images.records import ImageView, MediaType
from coordinator.domain.imagestore import images as store_images
from coordinator.domain.imagestore.images import Ticket, UploadTicket

routes = Routes("images")


class ImageAdd(BaseModel):
    name: str = Field(pattern=NAME)
    url: SourceUrl | None = Field(None, description="http(s):// or file:// (where the backup storage's agent "
                                  "allows it); or give volume_uuid")
    volume_uuid: str | None = Field(None, description="an image of this volume as it is now (Ceph: copy-on-write, "
                                    "to Ceph backup storage of the volume's cluster; a file volume: sent to an "
                                    "image store by its host, its VM stopped)")
    snapshot: str | None = Field(None, pattern=NAME, description="with volume_uuid of a file volume: an image of "
                                 "this snapshot of it (its VM may run)")
    backup_storage_uuid: str = Field(description="uuid or name of a Ceph backup storage or an image store")
    format: Literal["auto", "raw", "qcow2", "iso"] = Field("auto", description="told by the data when auto")
    media_type: MediaType | None = Field(None, description="default: ISO for iso data, else RootVolumeTemplate")
    sha256: str | None = Field(None, description="checked by image stores; a mismatch fails the image")
    md5: str | None = Field(None, description="checked by image stores (the seeds' checksum)")

    @model_validator(mode="after")
    def _one_source(self) -> ImageAdd:
        if (self.url is None) == (self.volume_uuid is None):
            raise ValueError("url: give either url or volume_uuid")
        return self


class ImageQuery(SeedNamedRequest):
    backup_storage_uuid: str | None = Field(None, description="uuid or name")


class DeleteQuery(BaseModel):
    force: bool = Field(False, description="delete although volumes depend on it (cached copies stay until unused)")


class ImageList(BaseModel):
    images: list[ImageView]


@routes.route("POST", "/v1/images", body=ImageAdd, response=ImageView, status=202)
async def add_image(request: web.Request, body: ImageAdd) -> ImageView:
    """Add an image from a URL to a backup storage (answers at once: Downloading, progress via GET), or make
    one of a volume."""
    store, settings = request.app[STORE], request.app[SETTINGS]
    if body.volume_uuid is not None:
        return await catalog.from_volume(store, settings, body.name, body.volume_uuid, body.backup_storage_uuid,
                                         body.media_type, body.snapshot)
    assert body.url is not None
    return await catalog.add(store, settings, body.name, body.url, body.backup_storage_uuid, body.format,
                             body.media_type, body.sha256, body.md5)


@routes.route("GET", "/v1/images", query=ImageQuery, response=ImageList)
async def list_images(request: web.Request, query: ImageQuery) -> ImageList:
    """All images (optionally of one backup storage), with download progress."""
    return ImageList(images=await catalog.list_all(request.app[STORE], request.app[SETTINGS],
                                                   query.backup_storage_uuid))


@routes.route("GET", "/v1/images/{uuid}", response=ImageView)
async def get_image(request: web.Request) -> ImageView:
    """One image: Downloading (phase, percent), Ready (size, checksums) or Failed (reason)."""
    return await catalog.show(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"])


@routes.route("DELETE", "/v1/images/{uuid}", query=DeleteQuery, status=204)
async def delete_image(request: web.Request, query: DeleteQuery) -> None:
    """Delete an image; refused while volumes depend on it unless `force`."""
    await catalog.delete(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"], query.force)


@routes.route("POST", "/v1/images/{uuid}/tickets", response=Ticket, status=201, auth="anyhost")
async def image_ticket(request: web.Request) -> Ticket:
    """A read ticket for an image on an image store: any host (its own token) or an operator."""
    return await store_images.ticket(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"],
                                     request[CALLER].subject)


@routes.route("POST", "/v1/images/{uuid}/upload-tickets", response=UploadTicket, status=201, auth="anyhost")
async def upload_ticket(request: web.Request) -> UploadTicket:
    """An upload ticket for the host that sends an image made of its volume to the image store."""
    return await store_images.upload_ticket(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"],
                                            request[CALLER].subject)
