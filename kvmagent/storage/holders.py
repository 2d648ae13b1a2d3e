"""Which running VM has a volume's files open, and the changes libvirt makes under a running VM.

The storage must never rewrite a file qemu has open (revert, merging a snapshot, deleting): it asks
libvirt, the host's truth, which running domain has a disk inside the volume's directory. The few
changes that are safe on a running VM go through libvirt so qemu makes them: growing the disk, and an
external snapshot into an overlay we made (`REUSE_EXT`), after which qemu writes to the new file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kvmagent.errors import StorageError
from kvmagent.libvirt_driver import LibvirtDriver


@dataclass(frozen=True)
class Holder:
    domain: str  # libvirt uuid
    target: str  # the disk's target dev (vda, vdb...)
    source: Path  # the file qemu writes
    others: tuple[str, ...]  # the domain's other file disks' targets (left out of a snapshot)


class Holders(Protocol):
    async def holder(self, folder: Path) -> Holder | None: ...

    async def grow(self, holder: Holder, size: int) -> None: ...

    async def snapshot(self, holder: Holder, overlay: Path) -> None: ...


def snapshot_xml(holder: Holder, overlay: Path) -> str:
    """Disk-only snapshot of one disk into `overlay`; every other disk untouched."""
    snap = ET.Element("domainsnapshot")
    disks = ET.SubElement(snap, "disks")
    disk = ET.SubElement(disks, "disk", name=holder.target, snapshot="external", type="file")
    ET.SubElement(disk, "driver", type="qcow2")
    ET.SubElement(disk, "source", file=str(overlay))
    for other in holder.others:
        ET.SubElement(disks, "disk", name=other, snapshot="no")
    return ET.tostring(snap, encoding="unicode")


class LibvirtHolders:
    def __init__(self, driver: LibvirtDriver):
        self.driver = driver

    async def holder(self, folder: Path) -> Holder | None:
        if not self.driver.connected:
            raise StorageError(f"libvirt is not connected: cannot tell whether a running VM holds {folder}")
        for domain, disks in (await self.driver.disk_sources()).items():
            for target, source in disks:
                if Path(source).parent == folder:
                    others = tuple(t for t, _ in disks if t != target)
                    return Holder(domain, target, Path(source), others)
        return None

    async def grow(self, holder: Holder, size: int) -> None:
        await self.driver.block_resize(holder.domain, holder.target, size)

    async def snapshot(self, holder: Holder, overlay: Path) -> None:
        await self.driver.disk_snapshot(holder.domain, snapshot_xml(holder, overlay))
