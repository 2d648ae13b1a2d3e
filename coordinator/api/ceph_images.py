"""Images on Ceph backup storage: import from a URL (answered at once, progress on GET), list, delete.

An image lands as the RBD image `img-<uuid>` in the backup storage's pool with a protected snapshot
`base`; root volumes are cloned from it. See coordinator/ceph_imports.py for how progress is followed.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from typing import Literal
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import BaseModel, Field, field_validator

from cephagent.errors import CephAgentError
from coordinator.api.appkeys import SETTINGS, STORE
from coordinator.api.hosts import NAME
from coordinator.api.http import ApiError, Routes
from coordinator.domain.ceph import imports as ceph_imports
from coordinator.domain.ceph import storage as ceph
from coordinator.domain.ceph.imports import ImageOut
from coordinator.domain.ceph.storage import Agents
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn

routes = Routes("images")


class ImageCreate(BaseModel):
    name: str = Field(pattern=NAME)
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


class ImageQuery(BaseModel):
    backupStorageUuid: str | None = None


class ImageList(BaseModel):
    images: list[ImageOut]


@routes.route("POST", "/v1/ceph-backup-storage/{uuid}/images", body=ImageCreate, response=ImageOut, status=202)
async def add_image_to_ceph_backup_storage(request: web.Request, body: ImageCreate):
    """Import an image from a URL; answers at once (Downloading), progress via GET /v1/images/{uuid}."""
    store, settings = request.app[STORE], request.app[SETTINGS]
    ceph.agent_token(settings)
    bs, _ = await ceph.load(store, "bs", request.match_info["uuid"])
    uuid = uuidlib.uuid4().hex
    rec = ceph_imports.new_record(settings, uuid, body.name, bs, body.url, body.format)
    key = keys.image(uuid)
    await store.commit(Txn().absent(key).put(key, rec.model_dump()))
    try:
        rec = await ceph_imports.refresh(store, settings, uuid)
    except BaseException:
        await store.delete(key)
        raise
    ceph_imports.follow(store, settings, uuid)
    return rec.out()


async def _current(store: Store, request: web.Request, rec: ceph_imports.ImageRecord) -> ImageOut:
    """A Downloading image is refreshed from its agent on read (any replica can carry it forward)."""
    if rec.status == "Downloading":
        try:
            rec = await ceph_imports.refresh(store, request.app[SETTINGS], rec.uuid)
        except ApiError as e:
            if e.status == 404:
                raise
    return rec.out()


@routes.route("GET", "/v1/images", query=ImageQuery, response=ImageList)
async def list_images(request: web.Request, query: ImageQuery):
    """All images (optionally of one backup storage), with import progress."""
    store = request.app[STORE]
    entries, _ = await store.list(keys.IMAGES)
    recs = [ceph_imports.ImageRecord.model_validate(e.value) for e in entries]
    recs = [r for r in recs if query.backupStorageUuid in (None, r.backupStorageUuid)]
    return ImageList(images=list(await asyncio.gather(*(_current(store, request, r) for r in recs))))


@routes.route("GET", "/v1/images/{uuid}", response=ImageOut)
async def get_image(request: web.Request):
    """One image: status Downloading (phase, percent), Ready (size) or Failed (reason)."""
    store = request.app[STORE]
    rec, _ = await ceph_imports.load(store, request.match_info["uuid"])
    return await _current(store, request, rec)


async def dependants(store: Store, specs: list[str]) -> list[str]:
    """Volume names for RBD specs `pool/image` (the spec itself when no volume record matches)."""
    entries, _ = await store.list(keys.VOLUMES)
    names = {f"{e.value['pool']}/{e.value['rbdImage']}": e.value["name"] for e in entries}
    return sorted(names.get(s, s) for s in specs)


@routes.route("DELETE", "/v1/images/{uuid}", status=204)
async def delete_image(request: web.Request):
    """Delete an image; refused while it is importing or volumes are cloned from it."""
    store, settings = request.app[STORE], request.app[SETTINGS]
    rec, entry = await ceph_imports.load(store, request.match_info["uuid"])
    if rec.status == "Downloading":
        raise ApiError(409, "importing", f"image {rec.name} is still being imported; delete it once it is Ready "
                       "or Failed")
    bs, _ = await ceph.load(store, "bs", rec.backupStorageUuid)
    async with Agents(settings) as agents:
        try:
            await agents.call(bs, lambda c: c.delete_image(rec.pool, rec.rbdImage))
        except ApiError as e:
            if e.code != "has_dependants":
                raise
            try:
                info, _ = await agents.call(bs, lambda c: c.image(rec.pool, rec.rbdImage))
            except (ApiError, CephAgentError):
                raise e from None
            names = await dependants(store, info.children)
            raise ApiError(409, "has_dependants", f"image {rec.name} has {len(names)} volume(s) cloned from it: "
                           f"{', '.join(names)}; delete or flatten them first") from None
    if await store.commit(Txn().unchanged(entry.key, entry.mod_revision).delete(entry.key)) is None:
        raise ApiError(409, "conflict", f"image {rec.name} changed concurrently, retry")
    return web.Response(status=204)
