"""`qemu-img`, always told the formats: it never probes a file to guess one (a raw image that looks
like qcow2 could otherwise name any host file as its backing file).

Argument builders are pure (tested apart); the coroutines run them through `agentkit.proc`. Paths are
absolute (no protocol prefixes); backing files are named relative to the overlay's directory, and
`-U` (force share) lets us read files a running VM holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentkit.proc import arun

TIMEOUT = 3600.0  # a rebase or convert copies data: bounded, but generously


@dataclass(frozen=True)
class Info:
    format: str
    virtual_size: int
    backing: str | None  # the backing file name as written in the image


def info_argv(path: Path, fmt: str) -> list[str]:
    return ["qemu-img", "info", "-U", "-f", fmt, "--output=json", str(path)]


def create_argv(path: Path, size: int, backing: str | None = None, backing_fmt: str | None = None) -> list[str]:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing is not None:
        argv += ["-b", backing, "-F", _need(backing_fmt)]
    return [*argv, str(path), str(size)]


def resize_argv(path: Path, size: int) -> list[str]:
    return ["qemu-img", "resize", "-q", "-f", "qcow2", str(path), str(size)]


def rebase_argv(path: Path, backing: str | None, backing_fmt: str | None) -> list[str]:
    """Safe-mode rebase: the data that differs between old and new backing is copied into `path`."""
    if backing is None:
        return ["qemu-img", "rebase", "-q", "-f", "qcow2", "-b", "", str(path)]
    return ["qemu-img", "rebase", "-q", "-f", "qcow2", "-b", backing, "-F", _need(backing_fmt), str(path)]


def convert_argv(src: Path, dst: Path) -> list[str]:
    """A flat qcow2 copy of `src` and its whole backing chain (what an image made from a volume is), on disk
    when qemu-img ends (`-t writeback` flushes it at the close; convert's default cache, unsafe, never does,
    and its checksum, written next, would describe bytes a power loss may take)."""
    return ["qemu-img", "convert", "-U", "-q", "-f", "qcow2", "-O", "qcow2", "-t", "writeback", "-W", str(src),
            str(dst)]


def _need(fmt: str | None) -> str:
    if fmt is None:
        raise ValueError("a backing file needs its format spelled out")
    return fmt


def parse_info(out: str) -> Info:
    doc: dict[str, Any] = json.loads(out)
    return Info(doc["format"], int(doc["virtual-size"]), doc.get("backing-filename"))


async def info(path: Path, fmt: str) -> Info:
    return parse_info((await arun(info_argv(path, fmt))).stdout)


async def create(path: Path, size: int, backing: str | None = None, backing_fmt: str | None = None) -> None:
    await arun(create_argv(path, size, backing, backing_fmt))


async def resize(path: Path, size: int) -> None:
    await arun(resize_argv(path, size))


async def rebase(path: Path, backing: str | None, backing_fmt: str | None) -> None:
    await arun(rebase_argv(path, backing, backing_fmt), timeout=TIMEOUT)


async def convert(src: Path, dst: Path) -> None:
    await arun(convert_argv(src, dst), timeout=TIMEOUT)
