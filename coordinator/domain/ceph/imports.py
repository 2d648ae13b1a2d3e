"""Image imports into Ceph backup storage: the image record in etcd and following the agent's task.

The record is written first (status Downloading, no task yet); `refresh` then submits the import to a
cephagent and, on every later call, reads the task's progress and writes what changed. Any replica can
refresh any image, so progress survives the replica that started it: the replica that took the
request follows the task in the background, and every read of a Downloading image refreshes it too.
An agent that restarted forgets its tasks (`task_not_found`); the import is then submitted again,
which the agent makes idempotent (a complete image is returned, a half-written one is redone).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel

from cephagent.errors import CephAgentError
from cephagent.wire import TaskInfo
from coordinator.api.http import ApiError, not_found
from coordinator.domain import credentials
from coordinator.domain.ceph import storage as ceph
from coordinator.domain.ceph.storage import Agents
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store, Txn
from coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)
Status = Literal["Downloading", "Ready", "Failed"]
POLL = 0.5
_followers: set[asyncio.Task] = set()


class ImageOut(BaseModel):
    """An image as the API shows it: `url` without user info or query (they may hold credentials)."""

    uuid: str
    name: str
    backupStorageUuid: str
    fsid: str
    pool: str
    rbdImage: str
    format: Literal["auto", "raw", "qcow2"]
    url: str
    status: Status
    phase: str | None = None
    percent: float | None = None
    done: int | None = None
    total: int | None = None
    reason: str | None = None
    size: int | None = None
    taskId: str | None = None
    taskHost: str | None = None
    createdAt: float
    updatedAt: float


class ImageRecord(ImageOut):
    """What etcd holds: the view plus the full URL, Fernet-encrypted."""

    urlSecret: str

    def out(self) -> ImageOut:
        return ImageOut.model_validate(self.model_dump(exclude={"urlSecret"}))


def display_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def new_record(settings: CoordinatorSettings, uuid: str, name: str, bs: ceph.StorageRecord, url: str,
               fmt: str) -> ImageRecord:
    now = time.time()
    return ImageRecord(uuid=uuid, name=name, backupStorageUuid=bs.uuid, fsid=bs.fsid, pool=bs.pools["image"],
                       rbdImage=f"img-{uuid}", format=fmt, url=display_url(url), status="Downloading",
                       phase="queued", urlSecret=credentials.encrypt(settings.secret_key, settings.admin_token, url),
                       createdAt=now, updatedAt=now)


async def load(store: Store, uuid: str, field: str | None = None) -> tuple[ImageRecord, Entry]:
    entry = await store.get(keys.image(uuid))
    if entry is None:
        err = not_found("image", uuid)
        if field:
            err.status, err.field = 400, field
        raise err
    return ImageRecord.model_validate(entry.value), entry


async def _submit(agents: Agents, settings: CoordinatorSettings, store: Store, rec: ImageRecord) -> ImageRecord:
    bs, _ = await ceph.load(store, "bs", rec.backupStorageUuid)
    try:
        url = credentials.decrypt(settings.secret_key, settings.admin_token, rec.urlSecret)
    except credentials.CredentialError as e:
        raise ApiError(409, "credential_unreadable", str(e)) from None
    task_id, host = await agents.call(bs, lambda c: c.import_image(rec.pool, rec.rbdImage, url, rec.format),
                                      first_host=rec.taskHost)
    return rec.model_copy(update={"taskId": task_id, "taskHost": host, "phase": "queued"})


def _apply(rec: ImageRecord, info: TaskInfo) -> ImageRecord:
    update: dict = {"phase": info.progress.phase, "done": info.progress.done, "total": info.progress.total,
                    "percent": info.percent}
    if info.state == "succeeded" and info.result is not None:
        update.update(status="Ready", percent=100.0, size=info.result.size, phase="done")
    elif info.state == "failed":
        update.update(status="Failed", reason=info.error.message if info.error else "the import failed")
    return rec.model_copy(update=update)


def _milestone(rec: ImageRecord) -> tuple:
    """What is worth an etcd write: state, phase, whole percents, the task."""
    return rec.status, rec.phase, int(rec.percent or 0), rec.taskId, rec.taskHost


async def refresh(store: Store, settings: CoordinatorSettings, uuid: str) -> ImageRecord:
    """One step of following an import: submit it if needed, else read its task; persist milestones."""
    rec, entry = await load(store, uuid)
    if rec.status != "Downloading":
        return rec
    async with Agents(settings) as agents:
        if rec.taskId is None or rec.taskHost is None:
            new = await _submit(agents, settings, store, rec)
        else:
            try:
                info = await agents.client(rec.taskHost, timeout=10).task(rec.taskId)
                interrupted = info.state == "failed" and info.error is not None and info.error.code == "cancelled"
                new = await _submit(agents, settings, store, rec) if interrupted else _apply(rec, info)
            except CephAgentError as e:
                if e.code == "task_not_found":  # the agent restarted: submit again (idempotent there)
                    new = await _submit(agents, settings, store, rec)
                elif e.code in ceph.FAILOVER_CODES:
                    return rec  # its agent is down now; the task may still run there
                else:
                    raise ceph.api_error(e) from None
    if _milestone(new) != _milestone(rec):
        new.updatedAt = time.time()
        if await store.commit(Txn().unchanged(entry.key, entry.mod_revision).put(entry.key, new.model_dump())) \
                is None:
            return (await load(store, uuid))[0]  # someone else wrote a newer state
    return new


async def _follow(store: Store, settings: CoordinatorSettings, uuid: str) -> None:
    delay = POLL
    while True:
        try:
            rec = await refresh(store, settings, uuid)
            if rec.status != "Downloading":
                return
            delay = POLL
        except ApiError as e:
            if e.status == 404:
                return
            log.warning("following image %s: %s", uuid, e.message)
            delay = min(delay * 2, 10)
        except Exception:
            log.exception("following image %s", uuid)
            delay = min(delay * 2, 10)
        await asyncio.sleep(delay)


def follow(store: Store, settings: CoordinatorSettings, uuid: str) -> None:
    """Follow an import to its end in the background of this replica."""
    task = asyncio.create_task(_follow(store, settings, uuid))
    _followers.add(task)
    task.add_done_callback(_followers.discard)
