"""HTTP edge of ImageStore backup storage (coordinator/domain/imagestore/storage.py): add, list, show, delete."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from coordinator.api.appkeys import SETTINGS, STORE
from coordinator.api.http import Routes
from coordinator.domain.fields import NAME
from coordinator.domain.imagestore import storage
from coordinator.domain.imagestore.storage import ImageStoreView

routes = Routes("image stores")


class ImageStoreAdd(BaseModel):
    name: str = Field(pattern=NAME)
    host: str = Field(description="uuid or name of a host of kind imagestore")
    path: str | None = Field(None, pattern=r"^/", description="the directory of images: the agent's `root` "
                             "(checked); default: whatever the agent uses")
    zone: str = "default"


class LiveQuery(BaseModel):
    live: bool = Field(True, description="ask the agents for their state and capacity")


class ImageStoreList(BaseModel):
    image_stores: list[ImageStoreView]


@routes.route("POST", "/v1/image-stores", body=ImageStoreAdd, response=ImageStoreView, status=201)
async def add_image_store(request: web.Request, body: ImageStoreAdd) -> ImageStoreView:
    """Add ImageStore backup storage on a host whose imagestore agent answers."""
    return await storage.add(request.app[STORE], request.app[SETTINGS], body.name, body.host, body.path, body.zone)


@routes.route("GET", "/v1/image-stores", query=LiveQuery, response=ImageStoreList)
async def list_image_stores(request: web.Request, query: LiveQuery) -> ImageStoreList:
    """Every image store, with its agent's state and capacity."""
    return ImageStoreList(image_stores=await storage.list_all(request.app[STORE], request.app[SETTINGS], query.live))


@routes.route("GET", "/v1/image-stores/{uuid}", query=LiveQuery, response=ImageStoreView)
async def get_image_store(request: web.Request, query: LiveQuery) -> ImageStoreView:
    """One image store, by uuid or name."""
    return await storage.show(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"], query.live)


@routes.route("DELETE", "/v1/image-stores/{uuid}", status=204)
async def delete_image_store(request: web.Request) -> None:
    """Forget an image store (its files stay on the host); refused while it holds images."""
    await storage.delete(request.app[STORE], request.match_info["uuid"])
