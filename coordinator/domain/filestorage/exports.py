"""Images made of file volumes, into an image store (docs/storage.md, "Images from volumes").

The image's record (Downloading, phase `export`) and the volume's export request are written in one
transaction; the volume's host makes a flat qcow2 of the volume (its VM stopped) or of one of its
snapshots, asks for an upload ticket and sends it to the store, which checks and publishes it as it
does downloads. Once the store has it (or refused it) the export is dropped from the volume: its host
removes the file.
"""

from __future__ import annotations

import time
import uuid as uuidlib

from agentkit.errors import Invalid
from agentkit.model import ExportSpec
from coordinator.domain.errors import InvalidState
from coordinator.domain.filestorage import volumes
from coordinator.domain.filestorage.records import FileVolumeRecord, load_volume
from coordinator.domain.images.records import ImageRecord, MediaType, record_new
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn

PHASE = "export"


async def start(store: Store, bs_uuid: str, name: str, vol_uuid: str, media_type: MediaType | None,
                snapshot: str | None) -> ImageRecord:
    """Record the image and ask the volume's host for it, atomically."""
    if media_type == "ISO":
        raise Invalid("an image of a volume is a disk: RootVolumeTemplate or DataVolumeTemplate", field="media_type")
    vol, _ = await load_volume(store, vol_uuid, field="volume_uuid")
    now = time.time()
    image = ImageRecord(uuid=uuidlib.uuid4().hex, name=name, backup_storage_uuid=bs_uuid,
                        backup_storage_type="ImageStore", format="qcow2", url=f"volume://{vol.uuid}",
                        media_type=media_type or ("RootVolumeTemplate" if vol.type == "Root" else "DataVolumeTemplate"),
                        status="Downloading", phase=PHASE, source_volume_uuid=vol.uuid, source_snapshot=snapshot,
                        url_secret="", created_at=now, updated_at=now)

    async def ask(rec: FileVolumeRecord, txn: Txn) -> None:
        snap = volumes.named(rec, snapshot).uuid if snapshot is not None else None
        if snap is None:
            await volumes.stopped(store, rec, f"make image {name} of it (or make it of a snapshot)")
        rec.exports.append(ExportSpec(image_uuid=image.uuid, snapshot_uuid=snap))
        await record_new(store, txn, image)  # not on an image store deleted meanwhile
    await volumes.update(store, vol.uuid, ask)
    return image


async def uploader(store: Store, image: ImageRecord) -> str:
    """The host that sends the image (its volume's); InvalidState once there is nothing to send."""
    if image.status != "Downloading" or image.source_volume_uuid is None or image.backup_storage_type != "ImageStore":
        raise InvalidState(f"image {image.name} is {image.status}, not waiting for its volume's host to send it")
    vol, _ = await load_volume(store, image.source_volume_uuid)
    return vol.host_uuid


async def finish(store: Store, image: ImageRecord) -> None:
    """Drop the export from its volume (its host then removes the file); a deleted volume has none."""
    if image.source_volume_uuid is None or (await store.get(keys.file_volume(image.source_volume_uuid))) is None:
        return

    async def drop(rec: FileVolumeRecord, txn: Txn) -> None:
        rec.exports = [e for e in rec.exports if e.image_uuid != image.uuid]
    await volumes.update(store, image.source_volume_uuid, drop)
