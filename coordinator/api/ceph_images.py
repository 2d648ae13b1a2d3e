"""HTTP edge of the seeds' import into Ceph backup storage (answered at once; progress, list and delete are
the one `images` resource's, coordinator/api/images.py). The rules live in coordinator/domain/ceph/."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from coordinator.api.appkeys import SETTINGS, STORE
from coordinator.api.http import Routes
from coordinator.domain.ceph import images
from coordinator.domain.fields import Name, SourceUrl
from coordinator.domain.images.records import ImageView

routes = Routes("images")


class ImageCreate(BaseModel):
    name: Name
    url: SourceUrl = Field(description="http(s):// or file:// (a directory the agent's file_url_roots allows)")
    format: Literal["auto", "raw", "qcow2"] = Field("auto", description="qcow2 is converted to raw")


@routes.route("POST", "/v1/ceph-backup-storage/{uuid}/images", body=ImageCreate, response=ImageView, status=202)
async def add_image_to_ceph_backup_storage(request: web.Request, body: ImageCreate) -> ImageView:
    """Import an image from a URL; answers at once (Downloading), progress via GET /v1/images/{uuid}."""
    return await images.start_import(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"], body.name,
                                     body.url, body.format)
