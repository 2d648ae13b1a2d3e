"""`hs ceph …`: Ceph backup/primary storage, images and volumes (issue 7's operations).

The API spells Ceph fields in snake_case (it still accepts the seeds' camelCase on input); list keys,
body fields, query names and columns are all declared in this module.

Adding storage or mons reads the SSH host key of each mon that is no ceph host with recorded keys yet, as
`hs host add` reads a host's, and sends it along: the coordinator registers such mons as ceph hosts and deploys
their cephagents accepting only that key. It then waits (`--wait`) for those agents.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from agentkit.errors import HostStackError
from cephagent.monurl import parse_list
from coordinator.cli.command import Command, Group, Handler
from coordinator.cli.commands.hosts import scan
from coordinator.cli.commands.images import IMAGE, IMAGES, IMAGES_OF, VOLUME, VOLUMES, VOLUMES_OF, follow
from coordinator.cli.commands.resources import HOST, VM
from coordinator.cli.commands.resources import PRIMARY_STORAGE as FILE_PRIMARY_STORAGE
from coordinator.cli.declare import Call, Named, Resource, Source, arg
from coordinator.cli.errors import CliError
from coordinator.cli.session import Session

BACKUP = {"/v1/ceph-backup-storage": "backup_storages"}
PRIMARY = {"/v1/ceph-primary-storage": "primary_storages"}
NOT_LIVE = {"live": "false"}  # resolving a name needs no answer from the agents
STORAGE = Resource("Ceph storage", {**BACKUP, **PRIMARY}, list_query=NOT_LIVE)
BACKUP_STORAGE = Resource("Ceph backup storage", BACKUP, list_query=NOT_LIVE)
PRIMARY_STORAGE = Resource("Ceph primary storage", PRIMARY, list_query=NOT_LIVE)
# a volume of any primary storage type (`hs volume …` too) prints its storage, host and VM by name
VOLUME_NAMES = (Named("primary_storage_uuid", (FILE_PRIMARY_STORAGE, PRIMARY_STORAGE)), Named("host_uuid", (HOST,)),
                Named("vm_uuid", (VM,)))

SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size(text: str) -> int:
    """Bytes from `10G`, `512M`, `4096` (binary units)."""
    num, unit = text.rstrip("iBb").upper()[:-1], text.rstrip("iBb").upper()[-1:]
    if unit.isdigit():
        num, unit = num + unit, ""
    if unit not in SIZE_UNITS or not num.isdigit():
        raise argparse.ArgumentTypeError(f"size {text!r}: expected a number with an optional K, M, G or T suffix")
    return int(num) * SIZE_UNITS[unit]


def seconds(text: str) -> float:
    """A `--wait`: a finite number of seconds, 0 or more (the coordinator bounds it; `inf` would never be sent)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds, 0 or more")
    return value


def mon_urls(a: argparse.Namespace) -> list[str] | str:
    """One --mon-url is sent as text (the API splits it at commas, as the seeds write them); several as a list
    (so a password may contain a comma)."""
    urls: list[str] = a.mon_urls
    return urls[0] if len(urls) == 1 else urls


def _paths(suffix: str) -> tuple[str, ...]:
    """A path under the backup and under the primary storage collection; the storage argument picks one."""
    return tuple(f"{collection}/{{storage}}{suffix}" for collection in STORAGE.collections)


MON_URL = arg("--mon-url", action="append", required=True, dest="mon_urls",
              help="ssh_username:ssh_password@mon_server_ip:[ssh_port][/?monPort=port]; repeatable, or one "
                   "comma-separated list as in the seeds")
STORAGE_ARG = arg("storage", ref=STORAGE, help="Ceph backup or primary storage")
VOLUME_ARG = arg("volume", ref=VOLUME)
WAIT = arg("--wait", type=seconds, default=300.0, help="seconds to wait for the cephagents deployed to mons that had "
           "none (default 300); the same command run again goes on")
IMPORT = Call("POST", "/v1/ceph-backup-storage/{bs}/images", body={"name": "name", "url": "source", "format": "format"})
MONS: dict[str, Source] = {"mon_urls": mon_urls, "ssh_host_keys": "ssh_host_keys"}
WAITING = {"wait": "wait"}
ADD_BACKUP = Call("POST", "/v1/ceph-backup-storage", body={"name": "name", **MONS, "pool_name": "pool", "zone": "zone"},
                  query=WAITING)
ADD_PRIMARY = Call("POST", "/v1/ceph-primary-storage", body={
    "name": "name", "zone": "zone", **MONS, "image_cache_pool_name": "image_cache_pool",
    "root_volume_pool_name": "root_volume_pool", "data_volume_pool_name": "data_volume_pool"}, query=WAITING)
ADD_MON = Call("POST", _paths("/mons"), body=MONS, query=WAITING)
HOSTS = Call("GET", "/v1/hosts")


async def list_storage(s: Session, a: argparse.Namespace) -> object:
    rows = []
    for path, key in STORAGE.collections.items():
        rows += (await s.client.get(path))[key]
    return {"ceph_storages": rows}


async def mon_host_keys(s: Session, a: argparse.Namespace) -> dict[str, list[str]] | None:
    """The SSH host keys of the mons that are no ceph host with recorded keys. A key that cannot be read is left
    out with a warning: such a mon's cephagent is not deployed until one is recorded, and one deployed by hand
    needs none."""
    try:
        mons = parse_list(mon_urls(a))
    except HostStackError:
        return None  # the coordinator says what is wrong with them
    known = (await s.send(HOSTS, a))["hosts"]
    keyed = {h["address"] for h in known if h["kind"] == "ceph" and h["ssh_host_keys"]}
    found: dict[str, list[str]] = {}
    for m in mons:
        if m.host not in keyed and m.host not in found:
            try:
                found[m.host] = await scan(m.host, m.ssh_port, "a deploy of its cephagent needs it: hs host "
                                           "ssh-host-key HOST records it once the mon is a ceph host")
            except CliError as e:
                print(f"hs: warning: mon {m.redacted}: {e}", file=sys.stderr)
    return found or None


def adding(call: Call) -> Handler:
    """Send `call` with the mons' SSH host keys."""
    async def add(s: Session, a: argparse.Namespace) -> object:
        return await s.send(call, a, ssh_host_keys=await mon_host_keys(s, a))
    return add


async def import_image(s: Session, a: argparse.Namespace) -> object:
    img: dict[str, Any] = await s.send(IMPORT, a)
    return img if a.no_wait else await follow(s, a, img, progress=True)


GROUP = Group("ceph", "Ceph backup and primary storage, images and RBD volumes", (
    Command("add-backup-storage", "Ceph backup storage on an existing --pool or a new one; mons without a cephagent "
            "get one", adding(ADD_BACKUP), arg("name"), MON_URL, arg("--pool"), arg("--zone", default="default"), WAIT),
    Command("add-primary-storage", "Ceph primary storage on existing pools where named, new ones otherwise; mons "
            "without a cephagent get one", adding(ADD_PRIMARY), arg("name"), MON_URL, arg("--zone", default="default"),
            arg("--image-cache-pool"), arg("--root-volume-pool"), arg("--data-volume-pool"), WAIT),
    Command("add-mon", "add mon servers to a Ceph backup or primary storage; mons without a cephagent get one",
            adding(ADD_MON), STORAGE_ARG, MON_URL, WAIT),
    Command("remove-mon", "remove mon servers from a Ceph storage",
            Call("DELETE", _paths("/mons"), query={"mon_hostnames": lambda a: ",".join(a.hosts)}),
            STORAGE_ARG, arg("hosts", nargs="+", help="mon_server_ip or ip:monPort")),
    Command("list", "Ceph backup and primary storage with status and capacity", list_storage,
            columns=("uuid", "name", "type", "zone", "fsid", "status", "capacity.available", "capacity.total")),
    Command("show", "one Ceph storage: mons, fsid, capacity, pools", Call("GET", _paths("")), STORAGE_ARG),
    Command("delete", "forget a Ceph storage (its pools stay)", Call("DELETE", _paths("")), STORAGE_ARG),
    Command("import-image", "import an image from a URL into Ceph backup storage, with a progress bar",
            import_image, arg("bs", ref=BACKUP_STORAGE), arg("name"), arg("source", metavar="URL"),
            arg("--format", default="auto", choices=["auto", "raw", "qcow2"]), arg("--no-wait", action="store_true")),
    Command("images", "images and their import status", IMAGES, IMAGES_OF,
            columns=("uuid", "name", "status", "percent", "size", "backup_storage_uuid")),
    Command("delete-image", "delete an image (refused while volumes are cloned from it)",
            Call("DELETE", "/v1/images/{image}"), arg("image", ref=IMAGE)),
    Command("create-volume", "a volume cloned (COW) from --image (a root volume, or --type Data from a "
            "DataVolumeTemplate), or an empty data volume",
            Call("POST", "/v1/volumes", body={"name": "name", "primary_storage_uuid": "ps", "image_uuid": "image",
                                              "size": "size", "type": "type"}),
            arg("ps", ref=PRIMARY_STORAGE), arg("name"), arg("--image", ref=IMAGE, help="the volume is cloned from it"),
            arg("--type", choices=["Root", "Data"], help="default: Root with --image, else Data"),
            arg("--size", type=size, help="e.g. 10G; required without --image"), names=VOLUME_NAMES),
    Command("volumes", "volumes with their RBD pool and image (of every primary storage type, unless "
            "--primary-storage names one)", VOLUMES, VOLUMES_OF,
            columns=("uuid", "name", "type", "status", "size", "disk.pool", "disk.image")),
    Command("show-volume", "one volume with its RbdDisk and parent", Call("GET", "/v1/volumes/{volume}"), VOLUME_ARG,
            names=VOLUME_NAMES),
    Command("resize", "grow a volume (e.g. 20G)",
            Call("POST", "/v1/volumes/{volume}/resize", body={"size": "size", "allow_shrink": "allow_shrink"}),
            VOLUME_ARG, arg("size", type=size), arg("--allow-shrink", action="store_true"), names=VOLUME_NAMES),
    Command("flatten", "copy the image's data in: the volume no longer depends on it",
            Call("POST", "/v1/volumes/{volume}/flatten"), VOLUME_ARG, names=VOLUME_NAMES),
    Command("snapshot", "snapshot a volume",
            Call("POST", "/v1/volumes/{volume}/snapshots", body={"name": "snapshot", "protect": "protect"}),
            VOLUME_ARG, arg("snapshot"), arg("--protect", action="store_true"), names=VOLUME_NAMES),
    Command("delete-snapshot", "delete a volume snapshot",
            Call("DELETE", "/v1/volumes/{volume}/snapshots/{snapshot}"), VOLUME_ARG, arg("snapshot"),
            names=VOLUME_NAMES),
    Command("delete-volume", "delete a volume (refused while clones or protected snapshots depend on it)",
            Call("DELETE", "/v1/volumes/{volume}"), VOLUME_ARG),
))
