"""Disk image files the benchmarks feed to importers and downloaders."""

from __future__ import annotations

import os
from pathlib import Path

MiB = 1 << 20


def make_file(path: Path, size: int, data_bytes: int) -> None:
    """A file of `size` bytes whose first `data_bytes` hold data (4 MiB blocks stamped with their index);
    the rest is a hole."""
    block = bytearray(os.urandom(4 * MiB))
    with open(path, "wb") as f:
        for i in range(data_bytes // (4 * MiB)):
            block[:8] = i.to_bytes(8, "little")
            f.write(block)
        f.truncate(size)
        os.fsync(f.fileno())  # no writeback competing with what is measured
