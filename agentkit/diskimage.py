"""Disk image files as HostStack accepts them: the format is told by the data, never guessed by qemu-img,
and no image may make its reader open another file.

`detect` reads magic numbers from the head of the data. `check_qcow2_header` parses the qcow2 header
itself and refuses a backing file, an external data file, encryption and the corrupt flag *before*
qemu-img ever opens the file (qemu-img info opens a qcow2's external data file, CVE-2024-4467).
`inspect` then runs `qemu-img info --output=json` with the format spelled out (`-f`), so qemu-img
never probes, and checks its answer once more. `is_zero` and `data_extents` keep copies thin.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from agentkit.proc import ProcessError, arun

QCOW2_MAGIC = b"QFI\xfb"
ISO_MAGIC, ISO_MAGIC_AT = b"CD001", 0x8001  # ISO 9660: the first volume descriptor's identifier
HEAD_SIZE = 64 << 10  # enough of the data to tell every format below
ZERO_CHUNK = 4 << 20
# Formats we do not accept, told by their magic (offset, bytes); a raw image must carry none of them.
FOREIGN = (
    (0, b"KDMV", "vmdk"), (0, b"# Disk DescriptorFile", "vmdk"), (0, b"vhdxfile", "vhdx"),
    (0, b"conectix", "vpc"), (0, b"QED\x00", "qed"), (0x40, b"\x7f\x10\xda\xbe", "vdi"),
    (0, b"LUKS\xba\xbe", "luks"), (0, b"WithoutFreeSpace", "parallels"), (0, b"WithouFreSpacExt", "parallels"),
    (0, b"Bochs Virtual HD Image", "bochs"), (0, b"#!/bin/sh\n#V2.0 Format", "cloop"),
)
# qcow2 v3 incompatible feature bits: 0 dirty, 1 corrupt, 2 external data file, 3 compression type,
# 4 extended L2 entries. Unknown bits would make qemu refuse the image anyway.
_CORRUPT, _DATA_FILE, _KNOWN_INCOMPATIBLE = 1 << 1, 1 << 2, (1 << 5) - 1


class ImageRejected(Exception):
    """The data is not an image HostStack accepts; the message says why."""


@dataclass(frozen=True)
class DiskInfo:
    format: str
    virtual_size: int
    actual_size: int


def detect(head: bytes) -> str:
    """`qcow2`, `iso`, `raw`, or the name of a format we do not accept, from the first HEAD_SIZE bytes."""
    if head.startswith(QCOW2_MAGIC):
        return "qcow2"
    for offset, magic, name in FOREIGN:
        if head[offset:offset + len(magic)] == magic:
            return name
    if head[ISO_MAGIC_AT:ISO_MAGIC_AT + len(ISO_MAGIC)] == ISO_MAGIC:
        return "iso"
    return "raw"


def check_declared(head: bytes, declared: str) -> str:
    """The format the data will be used as: `declared` when the data agrees (an ISO is raw data too),
    the detected one for `auto`; ImageRejected otherwise."""
    found = detect(head)
    if found not in ("qcow2", "iso", "raw"):
        raise ImageRejected(f"the data is a {found} image; accepted formats are qcow2, raw and iso")
    if declared in ("auto", found) or (declared == "raw" and found == "iso"):
        fmt = found if declared == "auto" else declared
    else:
        raise ImageRejected(f"declared format {declared}, but the data is {_a(found)}")
    if fmt == "qcow2":
        check_qcow2_header(head)
    return fmt


def _a(fmt: str) -> str:
    return {"raw": "not a qcow2 or iso image (raw)", "iso": "an ISO 9660 image"}.get(fmt, f"a {fmt} image")


def check_qcow2_header(head: bytes) -> None:
    """Refuse a qcow2 header that names another file, is encrypted or is marked corrupt."""
    if len(head) < 104:
        raise ImageRejected("truncated qcow2 header")
    version, backing_offset, _, _, _, crypt = struct.unpack_from(">IQIIQI", head, 4)
    if version not in (2, 3):
        raise ImageRejected(f"qcow2 version {version} is not supported")
    if backing_offset:
        raise ImageRejected("qcow2 images with a backing file are not accepted (flatten it first: "
                            "qemu-img convert -O qcow2)")
    if crypt:
        raise ImageRejected("encrypted qcow2 images are not accepted")
    if version == 3:
        (incompatible,) = struct.unpack_from(">Q", head, 72)
        if incompatible & _DATA_FILE:
            raise ImageRejected("qcow2 images with an external data file are not accepted")
        if incompatible & _CORRUPT:
            raise ImageRejected("the qcow2 image is marked corrupt")
        if incompatible & ~_KNOWN_INCOMPATIBLE:
            raise ImageRejected(f"unknown qcow2 incompatible features {incompatible:#x}")


def read_head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(HEAD_SIZE)


async def inspect(path: Path, fmt: str, timeout: float = 60) -> DiskInfo:
    """`qemu-img info` of an image whose head passed `check_declared` as `fmt` (qcow2 or raw)."""
    if not path.is_absolute():
        raise ValueError(f"{path}: qemu-img must get an absolute path (no protocol prefix)")
    try:
        out = await arun(["qemu-img", "info", "-f", fmt, "--output=json", str(path)], timeout=timeout)
    except ProcessError as e:
        raise ImageRejected(f"not a readable {fmt} image: {e.stderr.strip() or e}") from e
    info = json.loads(out.stdout)
    specific = (info.get("format-specific") or {}).get("data") or {}
    if "backing-filename" in info or "full-backing-filename" in info:
        raise ImageRejected("images with a backing file are not accepted")
    if specific.get("data-file") or specific.get("data-file-raw"):
        raise ImageRejected("qcow2 images with an external data file are not accepted")
    if info.get("encrypted") or specific.get("corrupt"):
        raise ImageRejected("encrypted or corrupt images are not accepted")
    return DiskInfo(format=fmt, virtual_size=int(info["virtual-size"]), actual_size=int(info.get("actual-size", 0)))


_ZEROS = bytes(ZERO_CHUNK)


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """All-zero? Decided by the first or last byte for most data, else by one memcmp."""
    if not data:
        return True
    if data[0] or data[-1]:
        return False
    return data == (_ZEROS if len(data) == ZERO_CHUNK else bytes(len(data)))


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the parts of a file that hold data, skipping holes (SEEK_DATA/SEEK_HOLE)."""
    extents, pos = [], 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole remains
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        extents.append((start, end - start))
        pos = end
    return extents
