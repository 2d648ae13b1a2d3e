"""`hs image …` (the one images resource, on Ceph backup storage or an image store) and `hs image-store …`
(ImageStore backup storage)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from coordinator.cli.command import Command, Group
from coordinator.cli.commands.resources import HOST
from coordinator.cli.declare import Call, Resource, arg
from coordinator.cli.errors import CliError
from coordinator.cli.progressbar import ProgressBar
from coordinator.cli.session import Session

IMAGE_STORE = Resource("image store", {"/v1/image-stores": "image_stores"}, list_query={"live": "false"})
BACKUP_STORAGE = Resource("backup storage", {"/v1/image-stores": "image_stores",
                                             "/v1/ceph-backup-storage": "backup_storages"},
                          list_query={"live": "false"})
IMAGE = Resource("image", {"/v1/images": "images"})
VOLUME = Resource("volume", {"/v1/volumes": "volumes"})
ADD = Call("POST", "/v1/images", body={"name": "name", "url": "source", "backup_storage_uuid": "backup_storage",
                                       "format": "format", "media_type": "media_type", "sha256": "sha256",
                                       "md5": "md5"})
NOW = Call("GET", "/v1/images/{image}")
IMAGE_ARG = arg("image", ref=IMAGE)
# the images and the volumes of every storage, or of the one a flag names (`hs image list`, `hs ceph images`, …)
IMAGES = Call("GET", "/v1/images", query={"backup_storage_uuid": "backup_storage"})
IMAGES_OF = arg("--backup-storage", ref=BACKUP_STORAGE, help="only the images on this image store or Ceph backup "
                "storage")
VOLUMES = Call("GET", "/v1/volumes", query={"primary_storage_uuid": "ps"})
VOLUMES_OF = arg("--primary-storage", dest="ps", help="only the volumes of this primary storage, of any type "
                 "(the API resolves a name)")


async def follow(s: Session, a: argparse.Namespace, img: dict[str, Any], progress: bool) -> dict[str, Any]:
    """Poll an image until it is no longer Downloading (a bar on stderr with `progress`); its end state."""
    bar = ProgressBar(sys.stderr, img["name"]) if progress else None
    while img["status"] == "Downloading":
        if bar:
            bar.update(img["percent"], img["phase"], img["done"])
        await asyncio.sleep(0.5)
        img = await s.send(NOW, a, image=img["uuid"])
    if bar:
        bar.finish(img["percent"], img["status"], img["done"])
    if img["status"] == "Failed":
        raise CliError(f"image {img['name']} failed: {img['reason']}")
    return img


async def add_image(s: Session, a: argparse.Namespace) -> object:
    img: dict[str, Any] = await s.send(ADD, a)
    return img if a.no_wait else await follow(s, a, img, a.progress)


IMAGE_GROUP = Group("image", "images on a backup storage (image store or Ceph): add from a URL, list, show, delete", (
    Command("add", "add an image from a URL (http(s), or file:// where the storage's agent allows it)", add_image,
            arg("name"), arg("source", metavar="URL"),
            arg("--backup-storage", required=True, ref=BACKUP_STORAGE, help="image store or Ceph backup storage"),
            arg("--format", choices=["auto", "qcow2", "raw", "iso"], help="default: told by the data"),
            arg("--media-type", choices=["RootVolumeTemplate", "DataVolumeTemplate", "ISO"]),
            arg("--sha256", help="checked by image stores"),
            arg("--md5", help="checked by image stores (the seeds' checksum)"),
            arg("--progress", action="store_true", help="show a progress bar until the image is ready"),
            arg("--no-wait", action="store_true", help="answer at once (Downloading)")),
    Command("create-from-volume", "an image of a volume as it is now (Ceph: copy-on-write into Ceph backup "
            "storage of the volume's cluster; a file volume: sent to an image store by its host)",
            Call("POST", "/v1/images", body={"name": "name", "volume_uuid": "volume", "snapshot": "snapshot",
                                             "backup_storage_uuid": "backup_storage", "media_type": "media_type"}),
            arg("name"), arg("volume", ref=VOLUME),
            arg("--backup-storage", required=True, ref=BACKUP_STORAGE),
            arg("--snapshot", help="a file volume: an image of this snapshot of it (its VM may run)"),
            arg("--media-type", choices=["RootVolumeTemplate", "DataVolumeTemplate"],
                help="default: after the volume's type")),
    Command("list", "images with their status", IMAGES, IMAGES_OF,
            columns=("uuid", "name", "backup_storage_type", "status", "percent", "format", "media_type", "size")),
    Command("show", "one image: status, progress, size, checksums", NOW, IMAGE_ARG),
    Command("delete", "delete an image (refused while volumes depend on it, unless --force)",
            Call("DELETE", "/v1/images/{image}", query={"force": "force"}), IMAGE_ARG,
            arg("--force", action="store_true", help="delete anyway; copies already cached stay until unused")),
))

IMAGE_STORE_GROUP = Group("image-store", "ImageStore backup storage: a directory of images on an imagestore host", (
    Command("add", "add an image store on a host of kind imagestore (its agent must answer)",
            Call("POST", "/v1/image-stores", body={"name": "name", "host": "host", "path": "path", "zone": "zone"}),
            arg("name"), arg("host", ref=HOST), arg("--path", help="the agent's directory of images (checked)"),
            arg("--zone", default="default")),
    Command("list", "image stores with their agents' state and capacity", Call("GET", "/v1/image-stores"),
            columns=("uuid", "name", "host_name", "path", "status", "capacity.available", "capacity.total")),
    Command("show", "one image store", Call("GET", "/v1/image-stores/{store}"), arg("store", ref=IMAGE_STORE)),
    Command("delete", "forget an image store (refused while it holds images; its files stay)",
            Call("DELETE", "/v1/image-stores/{store}"), arg("store", ref=IMAGE_STORE)),
))
