"""Images on an image store: added from a URL (answered at once, followed), deleted, and read by hosts
with tickets.

The record is written first (Downloading); the store is then asked to download it (`PUT`, idempotent,
under the image's uuid) and every refresh reads the store's view of it. A store that lost a failed
download across a restart answers 404: the request is made again. An image is Ready once the store
has it verified; its md5 (when none was given to check) follows shortly and is picked up on read.
An image of a file volume is not downloaded: its volume's host sends it with an upload ticket
(coordinator/domain/filestorage/exports.py); until then the store does not know it.
"""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeGuard

from pydantic import BaseModel, Field

from agentkit.addr import display_url
from agentkit.errors import Forbidden, NotFound, RemoteError
from coordinator.domain import credentials, hosts
from coordinator.domain.ceph.errors import CredentialUnreadable
from coordinator.domain.errors import InvalidState
from coordinator.domain.filestorage import exports
from coordinator.domain.hosts import Host
from coordinator.domain.images import follow as followers
from coordinator.domain.images.records import ImageRecord, MediaType, create, load_image
from coordinator.domain.imagestore.agents import StoreFailed, Stores, store_error, store_token, store_url
from coordinator.domain.imagestore.storage import ImageStoreRecord, load_store
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn
from coordinator.settings import CoordinatorSettings
from imagestore.client import ImageStoreClient
from imagestore.errors import ImageStoreError
from imagestore.tickets import mint, ticket_key
from imagestore.wire import AddRequest, ImageInfo

log = logging.getLogger(__name__)


class UploadTicket(BaseModel):
    """What a host needs to send an image made of one of its volumes to the image store."""

    url: str = Field(description="PUT the image's bytes there")
    ticket: str = Field(description="bearer credential for `url`, good for sending this image only")
    expires_at: int
    format: str
    media_type: str | None


class Ticket(BaseModel):
    """What a host needs to read an image from its store (docs/storage.md, "Fetching an image")."""

    url: str = Field(description="the image's data at its store")
    ticket: str = Field(description="bearer credential for `url` (or `?ticket=`), good for this image only")
    expires_at: int
    size: int
    sha256: str
    md5: str | None
    format: str
    virtual_size: int | None
    media_type: str | None


def _request(settings: CoordinatorSettings, rec: ImageRecord) -> AddRequest:
    try:
        url = credentials.decrypt(settings.secret_key, rec.url_secret)
    except credentials.CredentialError as e:
        raise CredentialUnreadable(str(e)) from None
    return AddRequest(url=url, format=rec.format, media_type=rec.media_type, sha256=rec.sha256 if rec.status ==
                      "Downloading" else None, md5=rec.md5 if rec.status == "Downloading" else None)


def new_record(settings: CoordinatorSettings, bs: ImageStoreRecord, name: str, req: AddRequest) -> ImageRecord:
    now = time.time()
    return ImageRecord(uuid=uuidlib.uuid4().hex, name=name, backup_storage_uuid=bs.uuid,
                       backup_storage_type="ImageStore", format=req.format, media_type=req.media_type,
                       url=display_url(req.url), status="Downloading", phase="queued", sha256=req.sha256, md5=req.md5,
                       url_secret=credentials.encrypt(settings.secret_key, req.url),
                       created_at=now, updated_at=now)


STATUS = {"downloading": "Downloading", "ready": "Ready", "failed": "Failed"}


def _apply(rec: ImageRecord, info: ImageInfo) -> ImageRecord:
    update: dict[str, Any] = {"status": STATUS[info.state]}
    if info.progress is not None:
        update.update(phase=info.progress.phase, done=info.progress.done, total=info.progress.total,
                      percent=info.percent)
    if info.state == "ready":
        update.update(phase="done", percent=100.0, size=info.size, virtual_size=info.virtual_size, sha256=info.sha256,
                      md5=info.md5, format=info.format, media_type=info.media_type, done=info.size, total=info.size)
    elif info.state == "failed":
        update["reason"] = f"{info.error.code}: {info.error.message}" if info.error else "the download failed"
    return rec.model_copy(update=update)


def _settled(rec: ImageRecord) -> bool:
    """Nothing more to learn from the store: it failed, or it is ready with its md5."""
    return rec.status == "Failed" or (rec.status == "Ready" and rec.md5 is not None)


async def refresh(store: Store, settings: CoordinatorSettings, uuid: str) -> ImageRecord:
    """One look at the store's view of the image (asking it again to download if it forgot); what changed
    is written back."""
    rec, entry = await load_image(store, uuid)
    if _settled(rec):
        return rec
    bs, _ = await load_store(store, rec.backup_storage_uuid)
    host = await hosts.load(store, bs.host_uuid)
    async with Stores(settings, 10) as stores:
        client = stores.client(host)
        try:
            try:
                info = await client.image(uuid)
            except ImageStoreError as e:
                if e.code != "image_not_found" or rec.status != "Downloading":
                    raise
                if rec.source_volume_uuid is not None:
                    return rec  # its volume's host has not sent it yet
                info = await client.add(uuid, _request(settings, rec))
                if await store.get(entry.key) is None:  # deleted since read: `remove` asked the store first
                    await _forget(client, host, uuid)
                    raise NotFound(what="image", ident=uuid) from None
        except ImageStoreError as e:
            raise store_error(host, e) from None
    new = _apply(rec, info)
    if (new.status, new.phase, int(new.percent or 0), new.md5) != (rec.status, rec.phase, int(rec.percent or 0),
                                                                  rec.md5):
        new.updated_at = time.time()
        if await store.commit(Txn().unchanged(entry.key, entry.mod_revision).put(entry.key, new.model_dump())) is None:
            return (await load_image(store, uuid))[0]
        if rec.status == "Downloading" and new.status != "Downloading":
            await exports.finish(store, new)
    return new


def _may_have_taken(e: BaseException) -> TypeGuard[StoreFailed]:
    """Whether a store whose request failed may still have taken it: it did not answer, or failed itself (a
    4xx, and a rejected token, refused it)."""
    return isinstance(e, StoreFailed) and e.status >= 500 and e.code != "store_unauthorized"


async def submit_recorded(store: Store, rec: ImageRecord, submit: Callable[[], Awaitable[ImageRecord]],
                          may_have_taken: Callable[[BaseException], TypeGuard[RemoteError]],
                          where: str) -> ImageRecord:
    """Record a new image (Downloading), then `submit` it to what is to hold it; what `submit` returns. When
    that refused (or was never asked) the record goes; when it `may_have_taken` the request all the same (it
    did not answer, or failed itself), the record stays, Failed and saying so, for a delete of the image to
    remove it `where` too: nothing is left there that no one sees. Ceph imports share this."""
    key = keys.image(rec.uuid)
    revision = await create(store, rec)  # refused (400) once its backup storage is gone: nothing asked of it yet
    try:
        return await submit()
    except BaseException as e:
        if may_have_taken(e):
            kept = f"; image {rec.name} ({rec.uuid}) is kept as Failed: delete it, which removes it {where} too"
            failed = rec.model_copy(update={"status": "Failed", "reason": f"{e.code}: {e.message}{kept}",
                                            "updated_at": time.time()})
            await store.commit(Txn().unchanged(key, revision).put(key, failed.model_dump()))
            raise type(e)(e.status, e.code, e.message + kept, e.field) from None
        await store.delete(key)
        raise


async def start(store: Store, settings: CoordinatorSettings, bs: ImageStoreRecord, name: str,
                req: AddRequest) -> ImageRecord:
    """Record the image (Downloading), ask its store to download it, follow it in the background (an image
    the store may have taken unanswered is kept Failed: `submit_recorded`)."""
    new = new_record(settings, bs, name, req)
    rec = await submit_recorded(store, new, lambda: refresh(store, settings, new.uuid), _may_have_taken,
                                "at its store")
    followers.follow(rec.uuid, lambda: refresh(store, settings, rec.uuid), _settled)
    return rec


async def start_export(store: Store, settings: CoordinatorSettings, bs: ImageStoreRecord, name: str, vol_uuid: str,
                       media_type: MediaType | None, snapshot: str | None) -> ImageRecord:
    """Record an image of a file volume and ask its host for it; follow it in the background."""
    rec = await exports.start(store, bs.uuid, name, vol_uuid, media_type, snapshot)
    followers.follow(rec.uuid, lambda: refresh(store, settings, rec.uuid), _settled)
    return rec


async def upload_ticket(store: Store, settings: CoordinatorSettings, uuid: str, subject: str) -> UploadTicket:
    """An upload ticket for the host whose volume the image is made of."""
    rec, _ = await load_image(store, uuid)
    sender = await exports.uploader(store, rec)
    if subject != f"host:{sender}":
        raise Forbidden(f"image {rec.name} is sent by the host of its volume ({sender}), not by {subject}")
    bs, _ = await load_store(store, rec.backup_storage_uuid)
    host = await hosts.load(store, bs.host_uuid)
    url = f"{store_url(settings, host)}/v1/images/{uuid}/data"
    value, expires = mint(ticket_key(store_token(settings, host)), subject, uuid, settings.image_ticket_ttl, op="put")
    return UploadTicket(url=url, ticket=value, expires_at=expires, format=rec.format, media_type=rec.media_type)


async def remove(store: Store, settings: CoordinatorSettings, rec: ImageRecord) -> None:
    """Delete the image at its store (a download in progress stops there), then its record, then at the store
    once more: a refresh (any replica's) that read the record before and found the image gone at the store
    asks for it again, and checks the record after that; between the two deletes, or after, one of them ends
    what it asked for, so no download is left that no record names."""
    bs, _ = await load_store(store, rec.backup_storage_uuid)
    host = await hosts.load(store, bs.host_uuid)
    async with Stores(settings) as stores:
        client = stores.client(host)
        await _forget(client, host, rec.uuid)
        await store.delete(keys.image(rec.uuid))
        try:
            await _forget(client, host, rec.uuid)
        except StoreFailed as e:  # the image is deleted; only a refresh racing the delete could have left one
            log.warning("image %s deleted, but its store did not answer a second delete: %s", rec.uuid, e)
    await exports.finish(store, rec)  # an image of a volume not sent yet: its host stops


async def _forget(client: ImageStoreClient, host: Host, uuid: str) -> None:
    """Delete the image at its store; one it does not have is gone already."""
    try:
        await client.delete(uuid)
    except ImageStoreError as e:
        if e.code != "image_not_found":
            raise store_error(host, e) from None


async def ticket(store: Store, settings: CoordinatorSettings, uuid: str, subject: str) -> Ticket:
    """A read ticket for `subject` (`host:<uuid>`, `ceph:<storage uuid>`, `admin`) to fetch a Ready image."""
    rec, _ = await load_image(store, uuid)
    if rec.backup_storage_type != "ImageStore":
        raise InvalidState(f"image {rec.name} is on Ceph backup storage: hosts do not fetch it, Ceph clones it")
    if rec.status != "Ready" or rec.size is None or rec.sha256 is None:
        raise InvalidState(f"image {rec.name} is {rec.status}, not Ready")
    bs, _ = await load_store(store, rec.backup_storage_uuid)
    host = await hosts.load(store, bs.host_uuid)
    url = f"{store_url(settings, host)}/v1/images/{uuid}/data"
    value, expires = mint(ticket_key(store_token(settings, host)), subject, uuid, settings.image_ticket_ttl)
    return Ticket(url=url, ticket=value, expires_at=expires, size=rec.size, sha256=rec.sha256, md5=rec.md5,
                  format=rec.format, virtual_size=rec.virtual_size, media_type=rec.media_type)

