"""A VM's disks: qcow2 files created on first use, and the devices that change on a running domain.

Planning is pure (which files are missing and the `qemu-img` command that makes one; which cdrom
media, volumes to detach and volumes to attach a live domain needs); the async halves run the
commands and the libvirt calls. Existing qcow2 files are never touched (a file is made under a
temporary name and renamed into place, so one that exists is whole).
"""

from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentkit import paths
from agentkit.durable import fsync_dir
from agentkit.model import CacheMode, FileDisk, VmSpec
from agentkit.proc import arun
from kvmagent.domain_xml import CDROM_ALIAS, VOL_ALIAS, disk_element, target_name, with_cdrom_source
from kvmagent.errors import SpecError, StorageError
from kvmagent.libvirt_driver import LibvirtDriver

log = logging.getLogger(__name__)
MAX_TARGETS = 702  # vda..vdzz


def absolute(spec: VmSpec, volume_dir: str) -> VmSpec:
    """Relative disk (and backing), ISO, kernel and initrd paths live under `volume_dir` (those of a disk on a
    primary storage under its directory: `paths.on_storage`)."""
    base = Path(volume_dir)
    vols = []
    for vol in spec.volumes:
        d = vol.disk
        if isinstance(d, FileDisk) and d.storage_uuid is None:
            backing = str(base / d.backing) if d.backing else None
            d = d.model_copy(update={"path": str(base / d.path), "backing": backing})
        vols.append(vol.model_copy(update={"disk": d}))
    update: dict[str, object] = {"volumes": vols}
    if spec.cdrom and spec.cdrom.path:
        update["cdrom"] = spec.cdrom.model_copy(update={"path": str(base / spec.cdrom.path)})
    if spec.kernel:
        initrd = str(base / spec.kernel.initrd) if spec.kernel.initrd else None
        update["kernel"] = spec.kernel.model_copy(update={"kernel": str(base / spec.kernel.kernel), "initrd": initrd})
    return spec.model_copy(update=update)


def check_confined(spec: VmSpec, volume_dir: str, roots: Sequence[str]) -> None:
    """SpecError unless every file the VM names really lies (symlinks followed) in `volume_dir` or `roots`."""
    named: list[tuple[str, str | None]] = [("disk", v.disk.path) for v in spec.volumes if isinstance(v.disk, FileDisk)]
    named += [("backing file", v.disk.backing) for v in spec.volumes if isinstance(v.disk, FileDisk) and v.disk.backing]
    named += [("ISO", spec.cdrom.path)] if spec.cdrom else []
    named += [("kernel", spec.kernel.kernel), ("initrd", spec.kernel.initrd)] if spec.kernel else []
    for what, path in named:
        if path is not None:
            try:
                paths.confine(path, volume_dir, roots, what)
            except paths.PathOutside as e:
                raise SpecError(str(e)) from None


def missing(spec: VmSpec, exists: Callable[[str], bool] = os.path.exists) -> Iterator[FileDisk]:
    """The spec's qcow2 files that do not exist yet, each checked when the caller gets to it."""
    for vol in spec.volumes:
        if isinstance(vol.disk, FileDisk) and not exists(vol.disk.path):
            yield vol.disk


@dataclass(frozen=True)
class Backing:
    format: str
    virtual_size: int


def info_argv(disk: FileDisk) -> list[str]:
    """`qemu-img info` of the backing file in its declared format (never probed)."""
    assert disk.backing is not None
    return ["qemu-img", "info", "-U", "-f", disk.backing_format, "--output=json", disk.backing]


def backing_of(disk: FileDisk, info: dict[str, object]) -> Backing:
    """The backing file as `qemu-img info` saw it; SpecError when it has a backing file of its own (whose
    format its header may leave to guessing)."""
    if "backing-filename" in info:
        raise SpecError(f"backing file {disk.backing} has a backing file of its own; flatten it first")
    size = info.get("virtual-size")
    if not isinstance(size, int):
        raise SpecError(f"qemu-img info {disk.backing}: no virtual size")
    return Backing(disk.backing_format, size)


def create_argv(disk: FileDisk, backing: Backing | None = None) -> list[str]:
    """`qemu-img create` for `disk`, over its backing file: at least as large as the backing image."""
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    size = disk.size_bytes
    if disk.backing and backing is not None:
        argv += ["-b", disk.backing, "-F", backing.format]
        size = max(size, backing.virtual_size)
    return [*argv, disk.path, str(size)]


async def ensure(spec: VmSpec) -> None:
    """Create the missing qcow2 files (over their backing file, if any), each made beside its place and renamed
    into it once whole: a create cut short (the agent killed, a power loss) leaves no part of a file there to
    be taken for the disk. A directory that cannot be made or written (read-only or root-squashed
    filesystem, a file in the way) fails this VM only: StorageError."""
    for disk in missing(spec):
        path = Path(disk.path)
        part = path.with_name(f".{path.name}.part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"disk {disk.path}: cannot make its directory: {e.strerror or e}") from e
        backing = backing_of(disk, json.loads((await arun(info_argv(disk))).stdout)) if disk.backing else None
        await arun(create_argv(disk.model_copy(update={"path": str(part)}), backing))
        try:
            os.replace(part, path)
            fsync_dir(path.parent)
        except OSError as e:
            raise StorageError(f"disk {disk.path}: cannot put it in place: {e.strerror or e}") from e
        log.info("vm %s: created %s", spec.uuid, disk.path)


@dataclass(frozen=True)
class Attach:
    volume: str
    target: str
    xml: str


@dataclass(frozen=True)
class HotPlug:
    """What a running domain needs: new cdrom media (the whole element), detaches, attaches."""

    media: str | None = None
    detach: list[str] = field(default_factory=list)  # device aliases
    attach: list[Attach] = field(default_factory=list)


def _alias(disk: ET.Element) -> str:
    el = disk.find("alias")
    return el.get("name", "") if el is not None else ""


def _media_change(spec: VmSpec, cdrom: ET.Element | None) -> str | None:
    if cdrom is None:
        return None
    src = cdrom.find("source")
    have = src.get("file") if src is not None else None
    if have == (spec.cdrom.path if spec.cdrom else None):
        return None
    return with_cdrom_source(ET.tostring(cdrom, "unicode"), spec.cdrom)


def plan_hotplug(spec: VmSpec, live_xml: str, cache: CacheMode) -> HotPlug:
    """Cdrom media and data volumes of a running domain (the rest waits for its next boot).

    Live devices are matched by alias; a new volume takes the first free target name."""
    disks = [(d, _alias(d)) for d in ET.fromstring(live_xml).findall("devices/disk")]
    cdrom = next((d for d, alias in disks if alias == CDROM_ALIAS), None)
    live_vols = {alias.removeprefix(VOL_ALIAS) for _, alias in disks if alias.startswith(VOL_ALIAS)}
    data = {v.uuid: v for v in spec.volumes if v.role != "root"}
    detach = [VOL_ALIAS + gone for gone in sorted(live_vols - {v.uuid for v in spec.volumes})]
    taken = {t.get("dev") for d, _ in disks if (t := d.find("target")) is not None}
    attach = []
    for new in sorted(set(data) - live_vols):
        target = next(t for t in map(target_name, range(1, MAX_TARGETS)) if t not in taken)
        taken.add(target)
        attach.append(Attach(new, target, ET.tostring(disk_element(data[new], target, cache), "unicode")))
    return HotPlug(_media_change(spec, cdrom), detach, attach)


async def hotplug(driver: LibvirtDriver, luuid: str, vm_uuid: str, plan: HotPlug) -> None:
    """Media first, then detaches, then attaches (a freed target may be reused at the next pass)."""
    if plan.media is not None:
        await driver.change_media(luuid, plan.media)
    for alias in plan.detach:
        await driver.detach_alias(luuid, alias)
    for new in plan.attach:
        await driver.attach_device(luuid, new.xml)
        log.info("vm %s: attached volume %s as %s", vm_uuid, new.volume, new.target)
