"""`hs ceph …`: Ceph backup/primary storage, images and volumes (issue 7's operations)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from coordinator.client import ApiClientError
from coordinator.cliregistry import CliError, arg, command
from coordinator.progressbar import ProgressBar

MON_URL = arg("--mon-url", action="append", required=True, dest="mon_urls",
              help="ssh_username:ssh_password@mon_server_ip:[ssh_port][/?monPort=port]; repeatable, or one "
                   "comma-separated list as in the seeds")
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(text: str) -> int:
    """Bytes from `10G`, `512M`, `4096` (binary units)."""
    num, unit = text.rstrip("iBb").upper()[:-1], text.rstrip("iBb").upper()[-1:]
    if unit.isdigit():
        num, unit = num + unit, ""
    if unit not in SIZE_UNITS or not num.isdigit():
        raise argparse.ArgumentTypeError(f"size {text!r}: expected a number with an optional K, M, G or T suffix")
    return int(num) * SIZE_UNITS[unit]


def _mon_urls(a) -> list[str] | str:
    """One --mon-url is sent as text (the API splits it at commas, as the seeds write them); several as a list
    (so a password may contain a comma)."""
    return a.mon_urls[0] if len(a.mon_urls) == 1 else a.mon_urls


async def _ceph_storage(c, ref: str) -> str:
    """The API path of a Ceph backup or primary storage given by uuid or name."""
    for path in ("/v1/ceph-backup-storage", "/v1/ceph-primary-storage"):
        try:
            return f"{path}/{(await c.get(f'{path}/{ref}', live='false'))['uuid']}"
        except ApiClientError as e:
            if e.status != 404:
                raise
    raise CliError(f"no Ceph backup or primary storage {ref!r}")


async def _by_name(c, collection: str, ref: str) -> str:
    """uuid of an image or volume given by uuid or unique name."""
    rows = (await c.get(f"/v1/{collection}"))[collection]
    match = [r["uuid"] for r in rows if ref in (r["uuid"], r["name"])]
    if len(match) != 1:
        raise CliError(f"{'no' if not match else 'more than one'} {collection[:-1]} {ref!r}")
    return match[0]


@command("ceph", "add-backup-storage", arg("name"), MON_URL, arg("--pool"), arg("--zone", default="default"))
async def ceph_add_bs(c, a):
    """AddCephBackupStorage: an existing --pool or a new one"""
    return await c.post("/v1/ceph-backup-storage", {"name": a.name, "monUrls": _mon_urls(a), "poolName": a.pool,
                                                    "zone": a.zone})


@command("ceph", "add-primary-storage", arg("name"), MON_URL, arg("--zone", default="default"),
         arg("--image-cache-pool"), arg("--root-volume-pool"), arg("--data-volume-pool"))
async def ceph_add_ps(c, a):
    """AddCephPrimaryStorage: existing pools where named, new ones otherwise"""
    return await c.post("/v1/ceph-primary-storage", {
        "name": a.name, "zone": a.zone, "monUrls": _mon_urls(a), "imageCachePoolName": a.image_cache_pool,
        "rootVolumePoolName": a.root_volume_pool, "dataVolumePoolName": a.data_volume_pool})


@command("ceph", "add-mon", arg("storage"), MON_URL)
async def ceph_add_mon(c, a):
    """add mon servers to a Ceph backup or primary storage"""
    return await c.post(f"{await _ceph_storage(c, a.storage)}/mons", {"monUrls": _mon_urls(a)})


@command("ceph", "remove-mon", arg("storage"), arg("hosts", nargs="+", help="mon_server_ip or ip:monPort"))
async def ceph_remove_mon(c, a):
    """remove mon servers from a Ceph storage"""
    return await c.delete(f"{await _ceph_storage(c, a.storage)}/mons", monHostnames=",".join(a.hosts))


@command("ceph", "list")
async def ceph_list(c, a):
    """Ceph backup and primary storage with status and capacity"""
    bs = (await c.get("/v1/ceph-backup-storage"))["backupStorages"]
    ps = (await c.get("/v1/ceph-primary-storage"))["primaryStorages"]
    return {"cephStorages": bs + ps}


@command("ceph", "show", arg("storage"))
async def ceph_show(c, a):
    """one Ceph storage: mons, fsid, capacity, pools"""
    return await c.get(await _ceph_storage(c, a.storage))


@command("ceph", "delete", arg("storage"))
async def ceph_delete(c, a):
    """forget a Ceph storage (its pools stay)"""
    return await c.delete(await _ceph_storage(c, a.storage))


@command("ceph", "import-image", arg("bs"), arg("name"), arg("source", metavar="URL"), arg("--format", default="auto",
         choices=["auto", "raw", "qcow2"]), arg("--no-wait", action="store_true"))
async def ceph_import_image(c, a):
    """import an image from a URL into Ceph backup storage, with a progress bar"""
    bs = await _ceph_storage(c, a.bs)
    img = await c.post(f"{bs}/images", {"name": a.name, "url": a.source, "format": a.format})
    if a.no_wait:
        return img
    bar = ProgressBar(sys.stderr, a.name)
    while img["status"] == "Downloading":
        bar.update(img["percent"], img["phase"], img["done"])
        await asyncio.sleep(0.5)
        img = await c.get(f"/v1/images/{img['uuid']}")
    bar.finish(img["percent"], img["status"], img["done"])
    if img["status"] == "Failed":
        raise CliError(f"image {a.name} failed: {img['reason']}")
    return img


@command("ceph", "images")
async def ceph_images(c, a):
    """images and their import status"""
    return await c.get("/v1/images")


@command("ceph", "delete-image", arg("image"))
async def ceph_delete_image(c, a):
    """delete an image (refused while volumes are cloned from it)"""
    return await c.delete(f"/v1/images/{await _by_name(c, 'images', a.image)}")


@command("ceph", "create-volume", arg("ps"), arg("name"), arg("--image", help="root volume cloned from it"),
         arg("--size", type=_size, help="e.g. 10G; required without --image"))
async def ceph_create_volume(c, a):
    """a root volume (COW clone of --image) or an empty data volume"""
    ps = (await c.get(await _ceph_storage(c, a.ps), live="false"))["uuid"]
    image = await _by_name(c, "images", a.image) if a.image else None
    return await c.post("/v1/volumes", {"name": a.name, "primaryStorageUuid": ps, "imageUuid": image,
                                        "size": a.size})


@command("ceph", "volumes")
async def ceph_volumes(c, a):
    """volumes on Ceph primary storage"""
    return await c.get("/v1/volumes")


@command("ceph", "show-volume", arg("volume"))
async def ceph_show_volume(c, a):
    """one volume with its RbdDisk and parent"""
    return await c.get(f"/v1/volumes/{await _by_name(c, 'volumes', a.volume)}")


@command("ceph", "resize", arg("volume"), arg("size", type=_size), arg("--allow-shrink", action="store_true"))
async def ceph_resize(c, a):
    """grow a volume (e.g. 20G)"""
    uuid = await _by_name(c, "volumes", a.volume)
    return await c.post(f"/v1/volumes/{uuid}/resize", {"size": a.size, "allowShrink": a.allow_shrink})


@command("ceph", "flatten", arg("volume"))
async def ceph_flatten(c, a):
    """copy the image's data in: the volume no longer depends on it"""
    return await c.post(f"/v1/volumes/{await _by_name(c, 'volumes', a.volume)}/flatten")


@command("ceph", "snapshot", arg("volume"), arg("snapshot"), arg("--protect", action="store_true"))
async def ceph_snapshot(c, a):
    """snapshot a volume"""
    uuid = await _by_name(c, "volumes", a.volume)
    return await c.post(f"/v1/volumes/{uuid}/snapshots", {"name": a.snapshot, "protect": a.protect})


@command("ceph", "delete-snapshot", arg("volume"), arg("snapshot"))
async def ceph_delete_snapshot(c, a):
    """delete a volume snapshot"""
    return await c.delete(f"/v1/volumes/{await _by_name(c, 'volumes', a.volume)}/snapshots/{a.snapshot}")


@command("ceph", "delete-volume", arg("volume"))
async def ceph_delete_volume(c, a):
    """delete a volume (refused while clones or protected snapshots depend on it)"""
    return await c.delete(f"/v1/volumes/{await _by_name(c, 'volumes', a.volume)}")


