"""Copies of image store images in a Ceph primary storage's image-cache pool: imported once, cloned after.

A volume from an ImageStore image on Ceph primary storage is a clone of the image's copy in the
storage's imageCache pool (`img-<image uuid>` with its protected snapshot `base`). The first volume
makes the copy. Its record `/hs/ceph/imagecache/<ps>/<image>` is created with compare-and-create, so one
request submits the import (the cephagent reads the store's data URL with a read ticket of subject
`ceph:<ps uuid>`, qcow2 becoming raw) and every other one waits on the same task. Any waiter carries the
import forward: it marks the copy Ready when the task succeeded, drops the record when it failed (the
next volume tries again), and submits again when the agent forgot the task (imports are idempotent
there). A copy is removed once its image is gone and no volume of that storage comes from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Literal

from pydantic import BaseModel

from agentkit.errors import HostStackError, Unavailable
from cephagent.errors import CephAgentError
from cephagent.wire import IMAGE_SNAPSHOT, ParentSpec
from coordinator.domain.ceph.agents import Agents, agent_error
from coordinator.domain.ceph.errors import AgentFailed
from coordinator.domain.ceph.records import StorageRecord, load_storage
from coordinator.domain.images.records import ImageRecord
from coordinator.domain.imagestore import images as store_images
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store, Txn
from coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)
POLL = 0.5
ORPHAN = 30.0  # seconds an Importing record may go without a task before a waiter submits it
WAIT = 3600.0  # seconds a volume waits for its image's copy


class CacheRecord(BaseModel):
    ps_uuid: str
    image_uuid: str
    pool: str
    rbd_image: str
    status: Literal["Importing", "Ready"]
    task_id: str | None = None
    task_host: str | None = None
    created_at: float

    @property
    def parent(self) -> ParentSpec:
        return ParentSpec(pool=self.pool, image=self.rbd_image, snapshot=IMAGE_SNAPSHOT)


async def _submit(store: Store, settings: CoordinatorSettings, agents: Agents, ps: StorageRecord, image: ImageRecord,
                  rec: CacheRecord, entry: Entry) -> None:
    """Ask a cephagent to import the image's copy; record its task (lost races are harmless: idempotent)."""
    ticket = await store_images.ticket(store, settings, image.uuid, f"ceph:{ps.uuid}")
    url = f"{ticket.url}?ticket={ticket.ticket}"
    fmt = "qcow2" if image.format == "qcow2" else "raw"
    task_id, host = await agents.call(ps, lambda c: c.import_image(rec.pool, rec.rbd_image, url, fmt))
    new = rec.model_copy(update={"task_id": task_id, "task_host": host})
    await store.commit(Txn().unchanged(entry.key, entry.mod_revision).put(entry.key, new.model_dump()))
    log.info("importing image %s into %s/%s of %s", image.name, rec.pool, rec.rbd_image, ps.title)


async def _step(store: Store, settings: CoordinatorSettings, agents: Agents, ps: StorageRecord, image: ImageRecord,
                rec: CacheRecord, entry: Entry) -> None:
    """One look at an Importing copy's task; the record moves on when the task ended."""
    if rec.task_id is None or rec.task_host is None:
        # its creator died before submitting it (one stamped that far ahead, by a replica whose clock is off,
        # would never come of age: every volume from the image would wait out WAIT and fail, for good)
        if abs(time.time() - rec.created_at) > ORPHAN:
            await _submit(store, settings, agents, ps, image, rec, entry)
        return
    try:
        info = await agents.client(rec.task_host, timeout=10).task(rec.task_id)
    except CephAgentError as e:
        if e.code == "task_not_found":
            await _submit(store, settings, agents, ps, image, rec, entry)
            return
        raise agent_error(e) from None
    txn = Txn().unchanged(entry.key, entry.mod_revision)
    if info.state == "succeeded":
        await store.commit(txn.put(entry.key, rec.model_copy(update={"status": "Ready"}).model_dump()))
    elif info.state == "failed":
        await store.commit(txn.delete(entry.key))
        reason = info.error.message if info.error else "the import failed"
        raise AgentFailed(502, info.error.code if info.error else "import_failed",
                          f"copying image {image.name} into {ps.title}: {reason}")


async def ensure(store: Store, settings: CoordinatorSettings, agents: Agents, ps: StorageRecord,
                 image: ImageRecord) -> ParentSpec:
    """The snapshot to clone from: the image's copy in `ps`'s image-cache pool, made first if need be."""
    key = keys.ceph_image_cache(ps.uuid, image.uuid)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        entry = await store.get(key)
        if entry is None:
            rec = CacheRecord(ps_uuid=ps.uuid, image_uuid=image.uuid, pool=ps.pools["imageCache"],
                              rbd_image=f"img-{image.uuid}", status="Importing", created_at=time.time())
            if await store.commit(Txn().absent(key).put(key, rec.model_dump())) is not None:
                entry = await store.get(key)
                assert entry is not None
                await _submit(store, settings, agents, ps, image, rec, entry)
            continue
        rec = CacheRecord.model_validate(entry.value)
        if rec.status == "Ready":
            return rec.parent
        await _step(store, settings, agents, ps, image, rec, entry)
        await asyncio.sleep(POLL)
    raise Unavailable(f"image {image.name} is still being copied into {ps.title}; retry later")


async def release(store: Store, settings: CoordinatorSettings, image_uuid: str,
                  ps: StorageRecord | None = None) -> None:
    """Remove the copies of a deleted image that no volume (of that storage) comes from any more; copies
    still used stay until their last volume goes (volumes.delete calls this again)."""
    if await store.get(keys.image(image_uuid)) is not None:
        return  # the image still exists: its copies stay for the next volumes
    entries, _ = await store.list(keys.CEPH_IMAGE_CACHE)
    volumes, _ = await store.list(keys.VOLUMES)
    for entry in entries:
        rec = CacheRecord.model_validate(entry.value)
        if rec.image_uuid != image_uuid or (ps is not None and rec.ps_uuid != ps.uuid):
            continue
        if any(isinstance(v.value, dict) and (v.value.get("primary_storage_uuid"), v.value.get("image_uuid")) ==
               (rec.ps_uuid, image_uuid) for v in volumes):
            continue
        await _drop(store, settings, rec, entry)


async def _drop(store: Store, settings: CoordinatorSettings, rec: CacheRecord, entry: Entry) -> None:
    try:
        owner, _ = await load_storage(store, "ps", rec.ps_uuid)
    except HostStackError:
        await store.commit(Txn().unchanged(entry.key, entry.mod_revision).delete(entry.key))
        return
    async with Agents(settings, store=store) as agents:
        with contextlib.suppress(AgentFailed):  # has_dependants: a clone not recorded as a volume; kept
            await agents.call(owner, lambda c: c.delete_image(rec.pool, rec.rbd_image))
            await store.commit(Txn().unchanged(entry.key, entry.mod_revision).delete(entry.key))
            log.info("removed the copy %s/%s of a deleted image from %s", rec.pool, rec.rbd_image, owner.title)
