"""What etcd holds for an image (`/hs/image/<uuid>`), on Ceph backup storage or on an image store.

One record for both, so the API has one `images` resource. `backup_storage_type` says where the image
lives; `fsid`, `pool`, `rbd_image`, `task_id` and `task_host` belong to Ceph backup storage only.
Records written by earlier versions (Ceph only, some in camelCase) still load (`SeedNamed`). The source
URL is kept Fernet-encrypted (`url_secret`): it may hold credentials; `url` is its display form.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from agentkit.errors import NotFound
from coordinator.domain.ceph.naming import SeedNamed
from coordinator.domain.errors import MissingReference
from coordinator.etcd import keys
from coordinator.etcd.cas import retry_cas
from coordinator.etcd.store import Entry, Store, Txn

BackupStorageType = Literal["Ceph", "ImageStore"]
ImageStatus = Literal["Downloading", "Ready", "Failed"]
ImageFormat = Literal["auto", "raw", "qcow2", "iso"]
MediaType = Literal["RootVolumeTemplate", "DataVolumeTemplate", "ISO"]


class ImageView(BaseModel):
    """An image as the API shows it: `url` without user info or query (they may hold credentials)."""

    uuid: str
    name: str
    backup_storage_uuid: str
    backup_storage_type: BackupStorageType = "Ceph"
    format: ImageFormat
    media_type: MediaType | None = None
    url: str
    status: ImageStatus
    phase: str | None = None
    percent: float | None = None
    done: int | None = None
    total: int | None = None
    reason: str | None = None
    size: int | None = None
    virtual_size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    fsid: str | None = None
    pool: str | None = None
    rbd_image: str | None = None
    task_id: str | None = None
    task_host: str | None = None
    source_volume_uuid: str | None = None  # an image made of a volume (by COW on Ceph)
    source_snapshot: str | None = None
    created_at: float
    updated_at: float

    @property
    def rbd(self) -> tuple[str, str]:
        """(pool, RBD image) of an image on Ceph backup storage."""
        assert self.pool is not None and self.rbd_image is not None, f"image {self.uuid} is not on Ceph"
        return self.pool, self.rbd_image


class ImageRecord(ImageView, SeedNamed):
    """The view plus the full source URL, Fernet-encrypted."""

    url_secret: str

    def view(self) -> ImageView:
        return ImageView.model_validate(self.model_dump(exclude={"url_secret"}))


def storage_key(rec: ImageView) -> str:
    """The key of the image's backup storage's record."""
    if rec.backup_storage_type == "ImageStore":
        return keys.image_store(rec.backup_storage_uuid)
    return keys.ceph_storage("bs", rec.backup_storage_uuid)


async def record_new(store: Store, txn: Txn, rec: ImageRecord) -> Txn:
    """`txn` records the new image `rec` only while its backup storage is there: the storage's delete, refused
    while it holds images, read none, and the image would outlive it. Gone, it is a 400 as for none; deleted
    after this read (on any replica), the commit fails and the retry finds it gone."""
    if await store.get(storage_key(rec)) is None:
        raise MissingReference(what="backup storage", ident=rec.backup_storage_uuid, field="backup_storage_uuid")
    key = keys.image(rec.uuid)
    return txn.exists(storage_key(rec)).absent(key).put(key, rec.model_dump())


async def create(store: Store, rec: ImageRecord) -> int:
    """Record the new image `rec` on its own (`record_new`); the revision it was written at."""
    async def attempt(_: int) -> int | None:
        return await store.commit(await record_new(store, Txn(), rec))
    return await retry_cas(attempt, f"image {rec.name}")


async def load_image(store: Store, uuid: str, field: str | None = None) -> tuple[ImageRecord, Entry]:
    """An image by uuid; 404, or 400 naming `field` when the reference came in a request body."""
    entry = await store.get(keys.image(uuid))
    if entry is None:
        raise MissingReference(what="image", ident=uuid, field=field) if field else NotFound(what="image", ident=uuid)
    return ImageRecord.model_validate(entry.value), entry


async def load_images(store: Store) -> list[ImageRecord]:
    entries, _ = await store.list(keys.IMAGES)
    return [ImageRecord.model_validate(e.value) for e in entries]


async def held_by(store: Store, bs_uuid: str) -> tuple[list[str], int]:
    """Names of the images a backup storage holds, and the revision they were read at: its delete is guarded on
    no image made since (`Txn.none_created_since(keys.IMAGES, …)`), on any replica."""
    entries, read_at = await store.list(keys.IMAGES)
    images = (ImageRecord.model_validate(e.value) for e in entries)
    return [i.name for i in images if i.backup_storage_uuid == bs_uuid], read_at
