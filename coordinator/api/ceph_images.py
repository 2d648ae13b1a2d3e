"""HTTP edge of images on Ceph backup storage: import from a URL (answered at once, progress on GET),
list, delete. The rules live in coordinator/domain/ceph/images.py and imports.py."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import BaseModel, Field, field_validator

from coordinator.api.appkeys import SETTINGS, STORE
from coordinator.api.http import Routes
from coordinator.domain.ceph import images
from coordinator.domain.ceph.naming import SeedNamedRequest
from coordinator.domain.ceph.records import ImageView
from coordinator.domain.fields import Name

routes = Routes("images")


class ImageCreate(BaseModel):
    name: Name
    url: str = Field(pattern=r"^(https?|file)://[^\s]+$", max_length=4096,
                     description="http(s):// or file:// (a directory the agent's file_url_roots allows)")
    format: Literal["auto", "raw", "qcow2"] = Field("auto", description="qcow2 is converted to raw")

    @field_validator("url")
    @classmethod
    def _parts(cls, v: str) -> str:
        parts = urlsplit(v)
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as e:
            raise ValueError(f"not a URL: {e}") from None
        if parts.scheme != "file" and not parts.hostname:
            raise ValueError("an http(s) URL needs a host")
        return v


class ImageQuery(SeedNamedRequest):
    backup_storage_uuid: str | None = None


class ImageList(BaseModel):
    images: list[ImageView]


@routes.route("POST", "/v1/ceph-backup-storage/{uuid}/images", body=ImageCreate, response=ImageView, status=202)
async def add_image_to_ceph_backup_storage(request: web.Request, body: ImageCreate) -> ImageView:
    """Import an image from a URL; answers at once (Downloading), progress via GET /v1/images/{uuid}."""
    return await images.start_import(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"], body.name,
                                     body.url, body.format)


@routes.route("GET", "/v1/images", query=ImageQuery, response=ImageList)
async def list_images(request: web.Request, query: ImageQuery) -> ImageList:
    """All images (optionally of one backup storage), with import progress."""
    return ImageList(images=await images.list_all(request.app[STORE], request.app[SETTINGS], query.backup_storage_uuid))


@routes.route("GET", "/v1/images/{uuid}", response=ImageView)
async def get_image(request: web.Request) -> ImageView:
    """One image: status Downloading (phase, percent), Ready (size) or Failed (reason)."""
    return await images.show(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"])


@routes.route("DELETE", "/v1/images/{uuid}", status=204)
async def delete_image(request: web.Request) -> web.Response:
    """Delete an image; refused while it is importing or volumes are cloned from it."""
    await images.delete(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"])
    return web.Response(status=204)
