"""Images on Ceph backup storage: imported from a URL (answered at once, progress on read), listed, deleted.

An image lands as the RBD image `img-<uuid>` in the backup storage's pool with a protected snapshot
`base`; root volumes are cloned from it. How an import's progress is followed: imports.py.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib

from agentkit.errors import HostStackError
from coordinator.domain.ceph import imports
from coordinator.domain.ceph.agents import Agents, agent_token
from coordinator.domain.ceph.errors import AgentFailed, HasDependants, Importing
from coordinator.domain.ceph.records import load_storage
from coordinator.domain.ceph.volumes import dependants
from coordinator.domain.images.records import ImageRecord, ImageView, MediaType, load_image, load_images
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn
from coordinator.settings import CoordinatorSettings


async def start_import(store: Store, settings: CoordinatorSettings, bs_ref: str, name: str, url: str,
                       fmt: str, media_type: MediaType | None = None) -> ImageView:
    """Record the image (Downloading), submit its import and follow it in the background."""
    agent_token(settings)
    bs, _ = await load_storage(store, "bs", bs_ref)
    uuid = uuidlib.uuid4().hex
    key = keys.image(uuid)
    await store.commit(Txn().absent(key).put(key, imports.new_record(settings, uuid, name, bs, url, fmt,
                                                                                   media_type).model_dump()))
    try:
        rec = await imports.refresh(store, settings, uuid)
    except BaseException:
        await store.delete(key)
        raise
    imports.follow(store, settings, uuid)
    return rec.view()


async def _current(store: Store, settings: CoordinatorSettings, rec: ImageRecord) -> ImageRecord:
    """A Downloading image is refreshed from its agent on read (any replica carries it forward); when its
    agent cannot tell now, the record is shown as it stands."""
    if rec.status != "Downloading":
        return rec
    try:
        return await imports.refresh(store, settings, rec.uuid)
    except HostStackError as e:
        if e.status == 404:
            raise
        return rec


async def show(store: Store, settings: CoordinatorSettings, uuid: str) -> ImageView:
    rec, _ = await load_image(store, uuid)
    return (await _current(store, settings, rec)).view()


async def list_all(store: Store, settings: CoordinatorSettings, bs_uuid: str | None) -> list[ImageView]:
    """Every image (of one backup storage), Downloading ones refreshed."""
    recs = [r for r in await load_images(store) if bs_uuid in (None, r.backup_storage_uuid)]
    return [r.view() for r in await asyncio.gather(*(_current(store, settings, r) for r in recs))]


async def delete(store: Store, settings: CoordinatorSettings, uuid: str) -> None:
    """Delete an image; refused while it is importing or volumes are cloned from it."""
    rec, _ = await load_image(store, uuid)
    if rec.status == "Downloading":
        raise Importing(name=rec.name)
    bs, _ = await load_storage(store, "bs", rec.backup_storage_uuid)
    async with Agents(settings) as agents:
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
