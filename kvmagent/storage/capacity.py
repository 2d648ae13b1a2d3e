"""A storage's physical capacity as this host sees it: the filesystem's size and free space, and the bytes
our files take (images, volumes, exports: allocated blocks, so thin files count what they really use).

These are observed figures for operators; the coordinator's reservations (virtual sizes, thin, with the
over-provisioning ratio) are what admit or refuse a new volume.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from kvmagent.storage.layout import Layout

MIB = 1 << 20


@dataclass(frozen=True)
class Capacity:
    total: int
    available: int
    used: int  # by our files

    def report(self) -> dict[str, int]:
        """Rounded to MiB: a report is sent when the figures change, not at every written block."""
        return {k: v // MIB * MIB for k, v in asdict(self).items()}


def allocated(path: Path) -> int:
    """Bytes allocated to the files under `path` (not following symlinks; vanished files count nothing)."""
    total = 0
    try:
        entries = list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += allocated(Path(entry.path))
            else:
                total += entry.stat(follow_symlinks=False).st_blocks * 512
        except FileNotFoundError:
            continue
    return total


def measure(layout: Layout) -> Capacity:
    st = os.statvfs(layout.root)
    used = sum(allocated(p) for p in (layout.images, layout.volumes, layout.root / "exports"))
    return Capacity(total=st.f_blocks * st.f_frsize, available=st.f_bavail * st.f_frsize, used=used)
