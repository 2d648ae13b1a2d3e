"""Images on Ceph backup storage: imported from a URL (answered at once; progress on read through the one
images resource, coordinator/domain/images/catalog.py), made of a volume by copy-on-write, deleted.

An image lands as the RBD image `img-<uuid>` in the backup storage's pool with a protected snapshot
`base`; volumes are cloned from it. How an import's progress is followed: imports.py.
"""

from __future__ import annotations

import contextlib
import time
import uuid as uuidlib
from typing import TypeGuard

from agentkit.errors import HostStackError
from cephagent.wire import IMAGE_SNAPSHOT, ParentSpec
from coordinator.domain import credentials
from coordinator.domain.ceph import imports, volumes
from coordinator.domain.ceph.agents import Agents, agent_token
from coordinator.domain.ceph.errors import AgentFailed, ClusterMismatch, HasDependants, Importing, VolumeNotReady
from coordinator.domain.ceph.records import StorageRecord, load_storage, load_volume
from coordinator.domain.ceph.volumes import dependants
from coordinator.domain.errors import MissingReference
from coordinator.domain.images.records import ImageRecord, ImageView, MediaType, create, load_image
from coordinator.domain.imagestore.images import submit_recorded
from coordinator.etcd import keys
from coordinator.etcd.store import Store
from coordinator.settings import CoordinatorSettings


def _may_have_taken(e: BaseException) -> TypeGuard[AgentFailed]:
    """Whether the storage's agents may still have taken an import that failed: the last one asked did not
    answer, or failed itself (a 4xx, and a rejected token, refused it)."""
    return isinstance(e, AgentFailed) and e.status >= 500


async def start_import(store: Store, settings: CoordinatorSettings, bs_ref: str, name: str, url: str,
                       fmt: str, media_type: MediaType | None = None) -> ImageView:
    """Record the image (Downloading), submit its import and follow it in the background. An import an
    agent may have taken unanswered is kept Failed, for a delete to remove it from the pool too (the image
    store's rule: `submit_recorded`)."""
    agent_token(settings)
    bs, _ = await load_storage(store, "bs", bs_ref)
    new = imports.new_record(settings, uuidlib.uuid4().hex, name, bs, url, fmt, media_type)
    rec = await submit_recorded(store, new, lambda: imports.refresh(store, settings, new.uuid), _may_have_taken,
                                f"from pool {new.pool}")
    imports.follow(store, settings, rec.uuid)
    return rec.view()


async def from_volume(store: Store, settings: CoordinatorSettings, bs: StorageRecord, vol_ref: str, name: str,
                      media_type: MediaType | None) -> ImageView:
    """An image of a volume as it is now, by copy-on-write: a protected snapshot of the volume
    (`img-<image uuid>`, recorded on the volume) cloned into the backup storage's pool. Nothing is copied;
    the volume keeps that snapshot until the image is deleted. Same Ceph cluster only (the seeds' rule)."""
    vol, _ = await load_volume(store, vol_ref, field="volume_uuid")
    if vol.status != "Ready":
        raise VolumeNotReady(name=vol.name, status=vol.status)
    if vol.fsid != bs.fsid:
        raise ClusterMismatch(f"an image of volume {vol.name} (Ceph cluster {vol.fsid}) can only go to Ceph backup "
                              f"storage of the same cluster, not {bs.name} ({bs.fsid})", field="backup_storage_uuid")
    uuid = uuidlib.uuid4().hex
    snap, source = f"img-{uuid}", f"ceph://{vol.pool}/{vol.rbd_image}"
    now = time.time()
    rec = ImageRecord(uuid=uuid, name=name, backup_storage_uuid=bs.uuid, fsid=bs.fsid, pool=bs.pools["image"],
                      rbd_image=f"img-{uuid}", format="raw", url=f"{source}@{snap}", status="Ready", phase="done",
                      media_type=media_type or ("RootVolumeTemplate" if vol.type == "Root" else "DataVolumeTemplate"),
                      source_volume_uuid=vol.uuid, source_snapshot=snap, percent=100.0, created_at=now,
                      updated_at=now, url_secret=credentials.encrypt(settings.secret_key, source))
    await volumes.snapshot(store, settings, vol.uuid, snap, protect=True)
    try:
        async with Agents(settings, store=store) as agents:
            info, _ = await agents.call(bs, lambda c: c.clone(*rec.rbd, ParentSpec(pool=vol.pool, image=vol.rbd_image,
                                                                                   snapshot=snap)))
            await agents.call(bs, lambda c: c.create_snapshot(*rec.rbd, IMAGE_SNAPSHOT, protect=True))
            rec.size = rec.virtual_size = info.size
            try:
                await create(store, rec)
            except MissingReference:  # its backup storage deleted meanwhile: the clone goes (the snapshot below)
                with contextlib.suppress(HostStackError):
                    await agents.call(bs, lambda c: c.delete_image(*rec.rbd))
                raise
    except BaseException:
        with contextlib.suppress(HostStackError):
            await volumes.delete_snapshot(store, settings, vol.uuid, snap)
        raise
    return rec.view()


async def delete(store: Store, settings: CoordinatorSettings, uuid: str) -> None:
    """Delete an image; refused while it is importing or volumes are cloned from it."""
    rec, _ = await load_image(store, uuid)
    if rec.status == "Downloading":
        raise Importing(name=rec.name)
    bs, _ = await load_storage(store, "bs", rec.backup_storage_uuid)
    async with Agents(settings, store=store) as agents:
        try:
            await agents.call(bs, lambda c: c.delete_image(*rec.rbd))
        except AgentFailed as e:
            if e.code != "has_dependants":
                raise
            try:
                info, _ = await agents.call(bs, lambda c: c.image(*rec.rbd))
            except HostStackError:
                raise e from None
            names = await dependants(store, info.children)
            raise HasDependants(f"image {rec.name} has {len(names)} volume(s) cloned from it: {', '.join(names)}; "
                                "delete or flatten them first") from None
    await store.delete(keys.image(uuid))  # its RBD image is gone: so goes the record
    if rec.source_volume_uuid and rec.source_snapshot:  # an image of a volume: the volume's snapshot goes too
        with contextlib.suppress(HostStackError):
            await volumes.delete_snapshot(store, settings, rec.source_volume_uuid, rec.source_snapshot)
