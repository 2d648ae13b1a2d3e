"""Image imports into Ceph backup storage: following the agent's task and recording its progress.

The record is written first (status Downloading, no task yet); `refresh` then submits the import to a
cephagent and, on every later call, reads the task's progress and writes what changed. Any replica can
refresh any image, so progress survives the replica that started it: the replica that took the
request follows the task in the background, and every read of a Downloading image refreshes it too.
An agent that restarted forgets its tasks (`task_not_found`); the import is then submitted again,
which the agent makes idempotent (a complete image is returned, a half-written one is redone).
"""

from __future__ import annotations

import time
from typing import Any

from agentkit.addr import display_url
from cephagent.errors import CephAgentError
from cephagent.wire import TaskInfo
from coordinator.domain import credentials
from coordinator.domain.ceph.agents import FAILOVER_CODES, Agents, agent_error
from coordinator.domain.ceph.errors import CredentialUnreadable
from coordinator.domain.ceph.records import StorageRecord, load_storage
from coordinator.domain.images import follow as followers
from coordinator.domain.images.records import ImageRecord, MediaType, load_image
from coordinator.etcd.store import Store, Txn
from coordinator.settings import CoordinatorSettings


def new_record(settings: CoordinatorSettings, uuid: str, name: str, bs: StorageRecord, url: str,
               fmt: str, media_type: MediaType | None = None) -> ImageRecord:
    now = time.time()
    return ImageRecord(uuid=uuid, name=name, backup_storage_uuid=bs.uuid, fsid=bs.fsid, pool=bs.pools["image"],
                       rbd_image=f"img-{uuid}", format=fmt, media_type=media_type, url=display_url(url),
                       status="Downloading", phase="queued", url_secret=credentials.encrypt(settings.secret_key, url),
                       created_at=now, updated_at=now)


async def _submit(agents: Agents, settings: CoordinatorSettings, store: Store, rec: ImageRecord) -> ImageRecord:
    bs, _ = await load_storage(store, "bs", rec.backup_storage_uuid)
    try:
        url = credentials.decrypt(settings.secret_key, rec.url_secret)
    except credentials.CredentialError as e:
        raise CredentialUnreadable(str(e)) from None
    task_id, host = await agents.call(bs, lambda c: c.import_image(*rec.rbd, url, rec.format),
                                      first_host=rec.task_host)
    return rec.model_copy(update={"task_id": task_id, "task_host": host, "phase": "queued"})


def _apply(rec: ImageRecord, info: TaskInfo) -> ImageRecord:
    update: dict[str, Any] = {"phase": info.progress.phase, "done": info.progress.done, "total": info.progress.total,
                              "percent": info.percent}
    if info.state == "succeeded" and info.result is not None:
        update.update(status="Ready", percent=100.0, size=info.result.size, phase="done")
    elif info.state == "failed":
        update.update(status="Failed", reason=info.error.message if info.error else "the import failed")
    return rec.model_copy(update=update)


def _milestone(rec: ImageRecord) -> tuple[str, str | None, int, str | None, str | None]:
    """What is worth an etcd write: state, phase, whole percents, the task."""
    return rec.status, rec.phase, int(rec.percent or 0), rec.task_id, rec.task_host


async def _step(agents: Agents, settings: CoordinatorSettings, store: Store, rec: ImageRecord) -> ImageRecord:
    """The record after one look at its task (submitting it when there is none, or none any more)."""
    if rec.task_id is None or rec.task_host is None:
        return await _submit(agents, settings, store, rec)
    try:
        info = await agents.client(rec.task_host, timeout=10).task(rec.task_id)
    except CephAgentError as e:
        if e.code == "task_not_found":  # the agent restarted: submit again (idempotent there)
            return await _submit(agents, settings, store, rec)
        if e.code in FAILOVER_CODES:
            return rec  # its agent is down now; the task may still run there
        raise agent_error(e) from None
    if info.state == "failed" and info.error is not None and info.error.code == "cancelled":
        return await _submit(agents, settings, store, rec)  # its agent was shut down mid-import
    return _apply(rec, info)


async def refresh(store: Store, settings: CoordinatorSettings, uuid: str) -> ImageRecord:
    """One step of following an import: submit it if needed, else read its task; persist milestones."""
    rec, entry = await load_image(store, uuid)
    if rec.status != "Downloading":
        return rec
    async with Agents(settings, store=store) as agents:
        new = await _step(agents, settings, store, rec)
    if _milestone(new) != _milestone(rec):
        new.updated_at = time.time()
        if await store.commit(Txn().unchanged(entry.key, entry.mod_revision).put(entry.key, new.model_dump())) \
                is None:
            return (await load_image(store, uuid))[0]  # someone else wrote a newer state
    return new


def follow(store: Store, settings: CoordinatorSettings, uuid: str) -> None:
    """Follow an import to its end in the background of this replica."""
    followers.follow(uuid, lambda: refresh(store, settings, uuid), lambda rec: rec.status != "Downloading")
