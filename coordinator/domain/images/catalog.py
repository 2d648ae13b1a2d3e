"""The one `images` resource: images on Ceph backup storage and on image stores, behind one API.

An image is added to a backup storage named by uuid or name, of either type; reads refresh Downloading
images from whatever holds them. Deleting an image a volume depends on is refused unless forced: a
forced delete removes the image from its store and its record, while copies already cached (a host's
image cache, a Ceph image-cache pool) stay until nothing uses them.
"""

from __future__ import annotations

import asyncio

from pydantic import ValidationError

from agentkit.errors import HostStackError, InUse, Invalid
from coordinator.domain.ceph import imagecache
from coordinator.domain.ceph import images as ceph_images
from coordinator.domain.ceph import imports as ceph_imports
from coordinator.domain.ceph.records import StorageRecord, load_storage
from coordinator.domain.errors import MissingReference
from coordinator.domain.images.records import ImageRecord, ImageView, MediaType, load_image, load_images
from coordinator.domain.imagestore import images as store_images
from coordinator.domain.imagestore.storage import ImageStoreRecord, load_store
from coordinator.etcd import keys
from coordinator.etcd.store import Store
from coordinator.settings import CoordinatorSettings
from imagestore.wire import AddRequest

FIELD = "backup_storage_uuid"


async def backup_storage(store: Store, ref: str) -> StorageRecord | ImageStoreRecord:
    """A backup storage of either type by uuid or name (a reference in a request body: 400 when unknown)."""
    try:
        return (await load_store(store, ref, field=FIELD))[0]
    except MissingReference:
        pass
    try:
        return (await load_storage(store, "bs", ref, field=FIELD))[0]
    except HostStackError:
        raise MissingReference(what="backup storage", ident=ref, field=FIELD) from None


async def add(store: Store, settings: CoordinatorSettings, name: str, url: str, bs_ref: str, fmt: str,
              media_type: MediaType | None, sha256: str | None, md5: str | None) -> ImageView:
    """Add an image from a URL to a backup storage; answers at once (Downloading)."""
    bs = await backup_storage(store, bs_ref)
    if isinstance(bs, StorageRecord):
        if sha256 or md5:
            raise Invalid("Ceph backup storage does not check checksums; add the image to an image store to have "
                          "them checked", field="sha256" if sha256 else "md5")
        if fmt == "iso" or media_type == "ISO":
            raise Invalid("Ceph backup storage holds disks (raw, qcow2); ISO images go to an image store",
                          field="media_type" if media_type == "ISO" else "format")
        return await ceph_images.start_import(store, settings, bs.uuid, name, url, fmt, media_type)
    try:
        req = AddRequest(url=url, format=fmt, media_type=media_type, sha256=sha256, md5=md5)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise Invalid(err["msg"].removeprefix("Value error, "), field=field) from None
    return (await store_images.start(store, settings, bs, name, req)).view()


async def from_volume(store: Store, settings: CoordinatorSettings, name: str, vol_ref: str, bs_ref: str,
                      media_type: MediaType | None, snapshot: str | None = None) -> ImageView:
    """An image of a volume as it is now (or of one of its snapshots: file volumes). A Ceph volume's by
    copy-on-write into Ceph backup storage of the same cluster; a file volume's is sent to an image store
    by its host."""
    bs = await backup_storage(store, bs_ref)
    file_volume = await store.get(keys.file_volume(vol_ref)) is not None
    if isinstance(bs, StorageRecord):
        if file_volume:
            raise Invalid(f"{bs.name} is Ceph backup storage: an image of a file volume goes to an image store",
                          field=FIELD)
        if snapshot is not None:
            raise Invalid("an image of a Ceph volume is made of the volume as it is now", field="snapshot")
        return await ceph_images.from_volume(store, settings, bs, vol_ref, name, media_type)
    if not file_volume:
        raise Invalid(f"{bs.name} is an image store: an image of a Ceph volume goes to Ceph backup storage of its "
                      "cluster (copy-on-write, nothing copied)", field=FIELD)
    return (await store_images.start_export(store, settings, bs, name, vol_ref, media_type, snapshot)).view()


async def _refresh(store: Store, settings: CoordinatorSettings, rec: ImageRecord) -> ImageRecord:
    if rec.backup_storage_type == "ImageStore":
        return await store_images.refresh(store, settings, rec.uuid)
    if rec.status != "Downloading":
        return rec
    return await ceph_imports.refresh(store, settings, rec.uuid)


async def current(store: Store, settings: CoordinatorSettings, rec: ImageRecord) -> ImageRecord:
    """The record carried forward from whatever holds the image; as it stands when that cannot tell now."""
    try:
        return await _refresh(store, settings, rec)
    except HostStackError as e:
        if e.status == 404:
            raise
        return rec


async def show(store: Store, settings: CoordinatorSettings, uuid: str) -> ImageView:
    rec, _ = await load_image(store, uuid)
    return (await current(store, settings, rec)).view()


async def list_all(store: Store, settings: CoordinatorSettings, bs_ref: str | None) -> list[ImageView]:
    """Every image (of one backup storage), Downloading ones refreshed."""
    bs_uuid = (await backup_storage(store, bs_ref)).uuid if bs_ref else None
    recs = [r for r in await load_images(store) if bs_uuid in (None, r.backup_storage_uuid)]
    return [r.view() for r in await asyncio.gather(*(current(store, settings, r) for r in recs))]


async def dependants(store: Store, uuid: str) -> list[str]:
    """Names of the volumes made from an image (any primary storage: a volume record names its image; a
    LocalStorage or SharedMountPoint volume's, with its checksum)."""
    snap, _ = await store.snapshot([keys.VOLUMES, keys.FILE_VOLUMES])
    records = [e.value for p in (keys.VOLUMES, keys.FILE_VOLUMES) for e in snap[p] if isinstance(e.value, dict)]
    return sorted(str(r.get("name")) for r in records
                  if uuid in (r.get("image_uuid"), (r.get("image") or {}).get("uuid")))


async def delete(store: Store, settings: CoordinatorSettings, uuid: str, force: bool = False) -> None:
    """Delete an image; refused while volumes depend on it, unless `force` (see the module's docstring)."""
    rec, _ = await load_image(store, uuid)
    if rec.backup_storage_type == "Ceph":
        await ceph_images.delete(store, settings, uuid)  # its clones are its dependants: RBD refuses, even forced
        return
    users = await dependants(store, uuid)
    if users and not force:
        raise InUse(f"image {rec.name} is used by {len(users)} volume(s): {', '.join(users[:10])}; delete them "
                    "first, or force (copies already cached stay until unused)")
    await store_images.remove(store, settings, rec)
    await imagecache.release(store, settings, uuid)  # copies in Ceph image-cache pools no volume comes from
