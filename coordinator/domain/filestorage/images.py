"""An image as hosts fetch it into their cache, from its record in the `images` resource.

A host needs the image's identity, format, size and sha256 (it verifies what it downloads against
them; where to read it, it asks the coordinator for a read ticket, docs/storage.md). The image must be
Ready on an image store (an image in a Ceph pool serves Ceph primary storage only), and its media type
must suit the use: a root volume from a RootVolumeTemplate, a data volume from a DataVolumeTemplate, a
cdrom from an ISO.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentkit.errors import Invalid
from agentkit.model import ImageRef
from coordinator.domain.errors import ImageNotReady
from coordinator.domain.images.records import MediaType, load_image
from coordinator.etcd.store import Store


@dataclass(frozen=True)
class Image:
    ref: ImageRef
    name: str
    media: MediaType
    virtual_size: int


async def image(store: Store, uuid: str, media: tuple[MediaType, ...], field: str) -> Image:
    """The image `uuid` if it is Ready, hosts can fetch it, and it is one of the `media` types."""
    rec, _ = await load_image(store, uuid, field)
    if rec.status != "Ready":
        raise ImageNotReady(f"image {rec.name} is {rec.status}, not Ready", field=field)
    if rec.backup_storage_type != "ImageStore" or rec.sha256 is None or rec.size is None or rec.format == "auto":
        raise Invalid(f"image {rec.name} is on Ceph backup storage: it serves Ceph primary storage only", field=field)
    kind = rec.media_type or ("ISO" if rec.format == "iso" else "RootVolumeTemplate")
    if kind not in media:
        raise Invalid(f"image {rec.name} has media type {kind}; {field} takes one of media type {' or '.join(media)}",
                      field=field)
    ref = ImageRef(uuid=uuid, format=rec.format, sha256=rec.sha256, size=rec.size)
    return Image(ref, rec.name, kind, rec.virtual_size or rec.size)
