"""`hs storage …` (LocalStorage and SharedMountPoint primary storage) and `hs volume …` (the one volumes
resource: volumes of every primary storage type, attached to VMs by uuid or name)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from coordinator.cli.command import Command, Group
from coordinator.cli.commands.ceph import VOLUME_NAMES, size
from coordinator.cli.commands.images import IMAGE, VOLUME, VOLUMES, VOLUMES_OF
from coordinator.cli.commands.resources import HOST, PRIMARY_STORAGE, VM, VM_NAMES
from coordinator.cli.declare import Call, Const, arg
from coordinator.cli.errors import CliError
from coordinator.cli.progressbar import ProgressBar
from coordinator.cli.session import Session

STORAGE_ARG = arg("storage", ref=PRIMARY_STORAGE)
VOLUME_ARG = arg("volume", ref=VOLUME)
SNAPSHOT = arg("snapshot", help="the snapshot's name")
MIGRATE = Call("POST", "/v1/volumes/{volume}/migrate", body={"dest_host_uuid": "host"})
NOW = Call("GET", "/v1/volumes/{volume}")
DETACH = Call("DELETE", "/v1/vms/{vm}/volumes/{volume}")


async def migrate(s: Session, a: argparse.Namespace) -> object:
    """Start a volume's migration; unless --no-wait, poll until it is on the new host (a bar with --progress)."""
    vol: dict[str, Any] = await s.send(MIGRATE, a)
    bar = ProgressBar(sys.stderr, vol["name"]) if a.progress else None
    while not a.no_wait and vol["progress"] is not None:
        p = vol["progress"]
        if bar:
            bar.update(p["percent"] if p["total"] else None, p["state"] + (f": {p['error']}" if p["error"] else ""),
                       p["done"])
        await asyncio.sleep(0.5)
        vol = await s.send(NOW, a, volume=vol["uuid"])
    if bar:
        bar.finish(100.0 if vol["progress"] is None else None, "Migrated" if vol["progress"] is None else "Started")
    return vol


async def detach(s: Session, a: argparse.Namespace) -> object:
    """Detach a data volume from the VM named, or else from the one it is attached to."""
    if a.vm is not None:
        return await s.send(DETACH, a)
    vol: dict[str, Any] = await s.send(NOW, a)
    if vol.get("vm_uuid") is None:
        raise CliError(f"volume {vol['name']} is not attached to a VM (argument VOLUME)")
    return await s.send(DETACH, a, volume=vol["uuid"], vm=vol["vm_uuid"])


def _add(kind: str, help: str, url_help: str) -> Command:
    return Command(f"add-{'local' if kind == 'LocalStorage' else 'smp'}", help,
                   Call("POST", "/v1/primary-storage", body={"name": "name", "type": Const(kind), "url": "path",
                                                              "zone": "zone", "host_uuids": "host"}),
                   arg("name"), arg("path", metavar="URL", help=url_help), arg("--zone", default="default"),
                   arg("--host", action="append", default=[], ref=HOST,
                       help="attach to this host (repeatable); default: every KVM host"))


STORAGE_GROUP = Group("storage", "LocalStorage and SharedMountPoint primary storage: add, capacity per host", (
    _add("LocalStorage", "a directory on each host", "the directory on every host (made if missing)"),
    _add("SharedMountPoint", "a shared filesystem pre-mounted on every host (OCFS2, GlusterFS, NFS...)",
         "the absolute path where it is mounted on every host"),
    Command("list", "file-based primary storage", Call("GET", "/v1/primary-storage"),
            columns=("uuid", "name", "type", "url", "reserved")),
    Command("show", "one storage: what each host reports (state, capacity) and reserves",
            Call("GET", "/v1/primary-storage/{storage}"), STORAGE_ARG),
    Command("delete", "forget a storage without volumes (its files stay on the hosts)",
            Call("DELETE", "/v1/primary-storage/{storage}"), STORAGE_ARG),
))

VOLUME_GROUP = Group("volume", "volumes on every primary storage type: create, snapshot, attach", (
    Command("create", "a blank data volume (--size), or one from an image (a root volume, or a data volume from a "
            "DataVolumeTemplate)",
            Call("POST", "/v1/volumes", body={"name": "name", "primary_storage_uuid": "ps", "image_uuid": "image",
                                              "size": "size", "host_uuid": "host"}),
            arg("name"),
            arg("--primary-storage", dest="ps", required=True, help="of any type, Ceph too (the API resolves names)"),
            arg("--image", ref=IMAGE), arg("--size", type=size, help="e.g. 10G"),
            arg("--host", ref=HOST, help="LocalStorage: the host it lives on"), names=VOLUME_NAMES),
    Command("list", "volumes of every primary storage (or of one)", VOLUMES, VOLUMES_OF,
            columns=("uuid", "name", "type", "primary_storage", "host", "vm", "size", "status"), names=VOLUME_NAMES),
    Command("show", "one volume", Call("GET", "/v1/volumes/{volume}"), VOLUME_ARG, names=VOLUME_NAMES),
    Command("delete", "delete a volume (its bytes are returned to its storage)", Call("DELETE", "/v1/volumes/{volume}"),
            VOLUME_ARG),
    Command("resize", "grow a volume (live when its VM runs)",
            Call("POST", "/v1/volumes/{volume}/resize", body={"size": "size"}), VOLUME_ARG, arg("size", type=size),
            names=VOLUME_NAMES),
    Command("snapshot", "snapshot a volume (live when its VM runs)",
            Call("POST", "/v1/volumes/{volume}/snapshots", body={"name": "snapshot"}), VOLUME_ARG, SNAPSHOT,
            names=VOLUME_NAMES),
    Command("revert", "revert a volume to a snapshot (its VM stopped)",
            Call("POST", "/v1/volumes/{volume}/snapshots/{snapshot}/rollback"), VOLUME_ARG, SNAPSHOT,
            names=VOLUME_NAMES),
    Command("delete-snapshot", "delete a snapshot (merged into what depends on it)",
            Call("DELETE", "/v1/volumes/{volume}/snapshots/{snapshot}"), VOLUME_ARG, SNAPSHOT,
            names=VOLUME_NAMES),
    Command("attach", "attach a data volume to a VM (live when it runs)",
            Call("POST", "/v1/vms/{vm}/volumes", body={"volume_uuid": "volume"}), VOLUME_ARG, arg("vm", ref=VM),
            names=VM_NAMES),
    Command("migrate", "move a LocalStorage volume to another host (a root volume with its stopped VM, a data "
            "volume while detached), copied and verified before the source's copy goes", migrate,
            VOLUME_ARG, arg("host", ref=HOST, help="the host to move it to"),
            arg("--progress", action="store_true", help="show a progress bar until it is there"),
            arg("--no-wait", action="store_true", help="answer at once (the copy goes on)"), names=VOLUME_NAMES),
    Command("detach", "detach a data volume from its VM (live when it runs)", detach, VOLUME_ARG,
            arg("vm", nargs="?", ref=VM, help="the VM it is attached to (default: the one it is attached to)"),
            names=VM_NAMES),
))
