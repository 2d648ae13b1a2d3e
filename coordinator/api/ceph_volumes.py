"""Volumes on Ceph primary storage: root volumes cloned copy-on-write from an image, empty data
volumes, resize, flatten, snapshots, delete; each one carries the RbdDisk a VM attaches.

A volume is recorded (status Creating) before the agent makes it and removed again if that fails, so
an interrupted create stays visible and deletable. Root volumes need the image's backup storage and
the primary storage to be one Ceph cluster: a clone never copies data (the seeds' rule).
"""

from __future__ import annotations

import re
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from agentkit.model import RbdDisk
from cephagent.client import CephAgentClient
from cephagent.wire import IMAGE_SNAPSHOT, ParentSpec, VolumeInfo
from coordinator.api.appkeys import SETTINGS, STORE
from coordinator.api.ceph_images import dependants
from coordinator.api.hosts import NAME
from coordinator.api.http import ApiError, Routes, not_found
from coordinator.domain.ceph import imports as ceph_imports
from coordinator.domain.ceph import storage as ceph
from coordinator.domain.ceph.storage import Agents, StorageRecord
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store, Txn

routes = Routes("volumes")
SNAP = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


class SnapshotRecord(BaseModel):
    name: str
    protected: bool = False
    createdAt: float


class VolumeRecord(BaseModel):
    uuid: str
    name: str
    primaryStorageUuid: str
    type: Literal["Root", "Data"]
    imageUuid: str | None = None
    flattened: bool = False
    pool: str
    rbdImage: str
    size: int
    fsid: str
    status: Literal["Creating", "Ready"]
    snapshots: list[SnapshotRecord] = []
    createdAt: float


class VolumeOut(VolumeRecord):
    disk: RbdDisk = Field(description="pass as root_volume/data_volumes of POST /v1/vms or disk of POST "
                          "/v1/vms/{uuid}/volumes")
    rbd: VolumeInfo | None = Field(None, description="the agent's live view: size, used, parent, snapshots")
    rbdError: str | None = None


class VolumeList(BaseModel):
    volumes: list[VolumeOut]


class VolumeCreate(BaseModel):
    name: str = Field(pattern=NAME)
    primaryStorageUuid: str = Field(min_length=1)
    imageUuid: str | None = Field(None, description="a root volume cloned from this image; else an empty data volume")
    size: int | None = Field(None, gt=0, le=1 << 50, description="bytes; required for data volumes, a root volume "
                             "grows to it (never below the image's size)")


class VolumeQuery(BaseModel):
    primaryStorageUuid: str | None = None


class LiveQuery(BaseModel):
    live: bool = True


class Resize(BaseModel):
    size: int = Field(gt=0, le=1 << 50)
    allowShrink: bool = Field(False, description="shrinking loses the data past the new end")


class SnapshotCreate(BaseModel):
    name: str = Field(pattern=SNAP)
    protect: bool = False


def disk_of(vol: VolumeRecord, ps: StorageRecord) -> RbdDisk:
    return RbdDisk(pool=vol.pool, image=vol.rbdImage, monitors=ps.monitors, user=ps.cephUser or "admin",
                   secret_uuid=ps.secretUuid or ceph.secret_uuid(ps.fsid), fsid=ps.fsid)


def out_of(vol: VolumeRecord, ps: StorageRecord, info: VolumeInfo | None = None, error: str | None = None) -> dict:
    return VolumeOut(**vol.model_dump(), disk=disk_of(vol, ps), rbd=info, rbdError=error).model_dump(mode="json")


async def load(store: Store, uuid: str) -> tuple[VolumeRecord, Entry]:
    entry = await store.get(keys.volume(uuid))
    if entry is None:
        raise not_found("volume", uuid)
    return VolumeRecord.model_validate(entry.value), entry


async def _root_source(store: Store, ps: StorageRecord, image_uuid: str) -> ParentSpec:
    """The image snapshot to clone from, if the image is Ready and lives in the primary storage's cluster."""
    image, _ = await ceph_imports.load(store, image_uuid, field="imageUuid")
    if image.status != "Ready":
        raise ApiError(409, "image_not_ready", f"image {image.name} is {image.status}"
                       + (f" ({image.reason})" if image.reason else ""), "imageUuid")
    if image.fsid != ps.fsid:
        raise ApiError(409, "cluster_mismatch", f"Ceph backup storage works only with Ceph primary storage in the same "
                       f"cluster: image {image.name} is in Ceph cluster {image.fsid}, primary storage {ps.name} in "
                       f"{ps.fsid}", "imageUuid")
    return ParentSpec(pool=image.pool, image=image.rbdImage, snapshot=IMAGE_SNAPSHOT)


@routes.route("POST", "/v1/volumes", body=VolumeCreate, response=VolumeOut, status=201)
async def create_volume(request: web.Request, body: VolumeCreate):
    """A root volume (COW clone of `imageUuid`) or an empty data volume (`size`) on Ceph primary storage."""
    store, settings = request.app[STORE], request.app[SETTINGS]
    ps, _ = await ceph.load(store, "ps", body.primaryStorageUuid, field="primaryStorageUuid")
    source = await _root_source(store, ps, body.imageUuid) if body.imageUuid else None
    if source is None and body.size is None:
        raise ApiError(400, "invalid", "size is required for a data volume (or give imageUuid)", "size")
    uuid = uuidlib.uuid4().hex
    vol = VolumeRecord(uuid=uuid, name=body.name, primaryStorageUuid=ps.uuid, type="Root" if source else "Data",
                       imageUuid=body.imageUuid, pool=ps.pools["rootVolume" if source else "dataVolume"],
                       rbdImage=f"vol-{uuid}", size=body.size or 0, fsid=ps.fsid, status="Creating",
                       createdAt=time.time())
    key = keys.volume(uuid)
    async with Agents(settings) as agents:
        rev = await store.commit(Txn().absent(key).put(key, vol.model_dump()))
        try:
            if source:
                info, _ = await agents.call(ps, lambda c: c.clone(vol.pool, vol.rbdImage, source, body.size))
            else:
                info, _ = await agents.call(ps, lambda c: c.create_volume(vol.pool, vol.rbdImage, vol.size))
        except BaseException:
            await store.delete(key)
            raise
    vol = vol.model_copy(update={"status": "Ready", "size": info.size})
    await store.commit(Txn().unchanged(key, rev or 0).put(key, vol.model_dump()))
    return 201, out_of(vol, ps, info)


@routes.route("GET", "/v1/volumes", query=VolumeQuery, response=VolumeList)
async def list_volumes(request: web.Request, query: VolumeQuery):
    """All volumes (optionally of one primary storage) with their RbdDisk."""
    store = request.app[STORE]
    entries, _ = await store.list(keys.VOLUMES)
    storages = {s.uuid: s for s in await ceph.load_all(store, "ps")}
    out = []
    for e in entries:
        vol = VolumeRecord.model_validate(e.value)
        if query.primaryStorageUuid in (None, vol.primaryStorageUuid) and vol.primaryStorageUuid in storages:
            out.append(out_of(vol, storages[vol.primaryStorageUuid]))
    return {"volumes": out}


@routes.route("GET", "/v1/volumes/{uuid}", query=LiveQuery, response=VolumeOut)
async def get_volume(request: web.Request, query: LiveQuery):
    """One volume: its record, the RbdDisk to attach it, and (live) the agent's view with its parent."""
    store = request.app[STORE]
    vol, _ = await load(store, request.match_info["uuid"])
    ps, _ = await ceph.load(store, "ps", vol.primaryStorageUuid)
    if not query.live:
        return out_of(vol, ps)
    try:
        async with Agents(request.app[SETTINGS], timeout=10) as agents:
            info, _ = await agents.call(ps, lambda c: c.volume(vol.pool, vol.rbdImage))
        return out_of(vol, ps, info)
    except ApiError as e:
        return out_of(vol, ps, error=e.message)


async def _operate(request: web.Request, op: Callable[[CephAgentClient, VolumeRecord], Awaitable[VolumeInfo | None]],
                   mutate: Callable[[VolumeRecord, VolumeInfo | None], None]) -> dict:
    """Run `op` on the volume's agent, then record what changed (compare-and-swap, retried)."""
    store = request.app[STORE]
    vol, _ = await load(store, request.match_info["uuid"])
    if vol.status != "Ready":
        raise ApiError(409, "not_ready", f"volume {vol.name} is {vol.status}")
    ps, _ = await ceph.load(store, "ps", vol.primaryStorageUuid)
    async with Agents(request.app[SETTINGS]) as agents:
        info, _ = await agents.call(ps, lambda c: op(c, vol))
    for _ in range(10):
        vol, entry = await load(store, vol.uuid)
        mutate(vol, info)
        if await store.commit(Txn().unchanged(entry.key, entry.mod_revision).put(entry.key, vol.model_dump())) \
                is not None:
            return out_of(vol, ps, info)
    raise ApiError(409, "conflict", f"volume {vol.name} keeps changing concurrently, retry")


def _sized(vol: VolumeRecord, info: VolumeInfo | None) -> None:
    if info is not None:
        vol.size = info.size


@routes.route("POST", "/v1/volumes/{uuid}/resize", body=Resize, response=VolumeOut)
async def resize_volume(request: web.Request, body: Resize):
    """Grow a volume (shrinking needs allowShrink)."""
    vol, _ = await load(request.app[STORE], request.match_info["uuid"])
    if body.size < vol.size and not body.allowShrink:
        raise ApiError(400, "invalid", f"volume {vol.name} is {vol.size} bytes; shrinking it to {body.size} loses "
                       "data: set allowShrink to do it anyway", "size")
    return await _operate(request, lambda c, v: c.resize(v.pool, v.rbdImage, body.size, body.allowShrink), _sized)


@routes.route("POST", "/v1/volumes/{uuid}/flatten", response=VolumeOut)
async def flatten_volume(request: web.Request):
    """Copy the image's data into the volume: it no longer depends on the image."""
    def mutate(vol: VolumeRecord, info: VolumeInfo | None) -> None:
        vol.flattened = vol.imageUuid is not None
        _sized(vol, info)
    return await _operate(request, lambda c, v: c.flatten(v.pool, v.rbdImage), mutate)


@routes.route("POST", "/v1/volumes/{uuid}/snapshots", body=SnapshotCreate, response=VolumeOut, status=201)
async def create_volume_snapshot(request: web.Request, body: SnapshotCreate):
    """Snapshot a volume (protected snapshots can only be deleted while nothing is cloned from them)."""
    async def op(c: CephAgentClient, v: VolumeRecord) -> VolumeInfo:
        await c.create_snapshot(v.pool, v.rbdImage, body.name, body.protect)
        return await c.volume(v.pool, v.rbdImage)

    def mutate(vol: VolumeRecord, info: VolumeInfo | None) -> None:
        vol.snapshots = [s for s in vol.snapshots if s.name != body.name]
        vol.snapshots.append(SnapshotRecord(name=body.name, protected=body.protect, createdAt=time.time()))
    return 201, await _operate(request, op, mutate)


def _snapshot_name(request: web.Request) -> str:
    snap = request.match_info["snapshot"]
    if not re.match(SNAP, snap):
        raise ApiError(400, "invalid", f"{snap!r} is not a snapshot name", "snapshot")
    return snap


@routes.route("POST", "/v1/volumes/{uuid}/snapshots/{snapshot}/rollback", response=VolumeOut)
async def rollback_volume_snapshot(request: web.Request):
    """Roll a volume back to a snapshot (stop its VM first)."""
    snap = _snapshot_name(request)
    return await _operate(request, lambda c, v: c.rollback(v.pool, v.rbdImage, snap), _sized)


@routes.route("DELETE", "/v1/volumes/{uuid}/snapshots/{snapshot}", response=VolumeOut)
async def delete_volume_snapshot(request: web.Request):
    """Delete a snapshot; refused while clones depend on it."""
    snap = _snapshot_name(request)

    async def op(c: CephAgentClient, v: VolumeRecord) -> VolumeInfo:
        await c.delete_snapshot(v.pool, v.rbdImage, snap)
        return await c.volume(v.pool, v.rbdImage)

    def mutate(vol: VolumeRecord, info: VolumeInfo | None) -> None:
        vol.snapshots = [s for s in vol.snapshots if s.name != snap]
    return await _operate(request, op, mutate)


async def _attached_to(store: Store, vol: VolumeRecord) -> list[str]:
    """Names of VMs whose desired state uses this volume's RBD image."""
    entries, _ = await store.list(keys.DESIRED + "host/")
    return [e.value.get("name", "?") for e in entries if "/vm/" in e.key and any(
        d.get("disk", {}).get("kind") == "rbd" and d["disk"].get("pool") == vol.pool
        and d["disk"].get("image") == vol.rbdImage for d in e.value.get("volumes", []))]


@routes.route("DELETE", "/v1/volumes/{uuid}", status=204)
async def delete_volume(request: web.Request):
    """Delete a volume; refused while a VM uses it, clones depend on it or it has protected snapshots."""
    store = request.app[STORE]
    vol, entry = await load(store, request.match_info["uuid"])
    vms = await _attached_to(store, vol)
    if vms:
        raise ApiError(409, "in_use", f"volume {vol.name} is attached to VM {', '.join(vms)}; detach it or destroy "
                       "the VM first")
    ps, _ = await ceph.load(store, "ps", vol.primaryStorageUuid)
    async with Agents(request.app[SETTINGS]) as agents:
        try:
            await agents.call(ps, lambda c: c.delete_volume(vol.pool, vol.rbdImage))
        except ApiError as e:
            if e.code == "has_dependants":
                info, _ = await agents.call(ps, lambda c: c.volume(vol.pool, vol.rbdImage))
                names = await dependants(store, [c for s in info.snapshots for c in s.children])
                raise ApiError(409, e.code, f"volume {vol.name} has {len(names)} clone(s) depending on it: "
                               f"{', '.join(names)}; delete or flatten them first") from None
            if e.code == "snapshot_protected":
                names = ", ".join(s.name for s in vol.snapshots if s.protected) or "?"
                raise ApiError(409, e.code, f"volume {vol.name} has protected snapshot(s) {names}; delete those "
                               "snapshots first") from None
            raise
    if await store.commit(Txn().unchanged(entry.key, entry.mod_revision).delete(entry.key)) is None:
        raise ApiError(409, "conflict", f"volume {vol.name} changed concurrently, retry")
    return web.Response(status=204)

