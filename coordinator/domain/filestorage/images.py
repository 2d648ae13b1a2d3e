"""An image as hosts fetch it into their cache, from its record in the `images` resource (`/hs/image/<uuid>`).

A host needs the image's identity, format, size and sha256 (it verifies what it downloads against
them; where to read it, it asks the coordinator for a read ticket, docs/storage.md). The record must
be Ready and carry a sha256 (images of the image store do; an image in a Ceph pool serves Ceph primary
storage only), and its media type must suit the use: a root volume from a RootVolumeTemplate, a data
volume from a DataVolumeTemplate, a cdrom from an ISO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agentkit.errors import Conflict, Invalid
from agentkit.model import ImageRef
from coordinator.domain.errors import MissingReference
from coordinator.etcd import keys
from coordinator.etcd.store import Store

Media = Literal["RootVolumeTemplate", "DataVolumeTemplate", "ISO"]


class ImageNotReady(Conflict):
    code = "image_not_ready"


@dataclass(frozen=True)
class Image:
    ref: ImageRef
    name: str
    media: Media
    virtual_size: int


async def image(store: Store, uuid: str, media: tuple[Media, ...], field: str) -> Image:
    """The image `uuid` if it is Ready, hosts can fetch it, and it is one of the `media` types."""
    entry = await store.get(keys.image(uuid))
    if entry is None or not isinstance(entry.value, dict):
        raise MissingReference(what="image", ident=uuid, field=field)
    rec = entry.value
    name = str(rec.get("name", uuid))
    if rec.get("status", "").lower() != "ready":
        raise ImageNotReady(f"image {name} is {rec.get('status')}, not Ready", field=field)
    if not rec.get("sha256"):
        raise Invalid(f"image {name} is on Ceph backup storage: it serves Ceph primary storage only", field=field)
    kind = rec.get("media_type") or ("ISO" if rec.get("format") == "iso" else "RootVolumeTemplate")
    if kind not in media:
        raise Invalid(f"image {name} is a {kind}; {field} needs a {' or '.join(media)}", field=field)
    ref = ImageRef(uuid=uuid, format=rec["format"], sha256=rec["sha256"], size=int(rec["size"]))
    return Image(ref, name, kind, int(rec.get("virtual_size") or rec["size"]))
