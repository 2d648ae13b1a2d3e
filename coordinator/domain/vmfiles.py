"""The files a VM names (disk and backing files, its ISO, kernel and initrd), checked where they are written.

The coordinator cannot see the hosts' filesystems, so it checks the text (agentkit/paths.py `check`):
normalised, relative (under the host's volume_dir) or inside the `file_roots` setting. The host's agent
checks the real files again before it uses them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agentkit import paths
from agentkit.model import FileDisk, KernelBoot, RbdDisk


@dataclass(frozen=True)
class Files:
    """What a request names: disks by request field, an ISO path, a kernel."""

    disks: Mapping[str, FileDisk | RbdDisk] = field(default_factory=dict)
    iso: str | None = None
    kernel: KernelBoot | None = None

    def named(self) -> dict[str, str]:
        """Every path, by the request field it came in."""
        found: dict[str, str | None] = {"iso_path": self.iso}
        for where, disk in self.disks.items():
            if isinstance(disk, FileDisk):
                found |= {f"{where}.path": disk.path, f"{where}.backing": disk.backing}
        if self.kernel:
            found |= {"kernel.kernel": self.kernel.kernel, "kernel.initrd": self.kernel.initrd}
        return {where: path for where, path in found.items() if path is not None}

    def check(self, roots: Sequence[str]) -> None:
        """PathOutside (400, naming the field) unless every path is normalised and inside `roots`."""
        for where, path in self.named().items():
            paths.check(path, roots, where)
