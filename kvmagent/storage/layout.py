"""The on-disk layout of a file-based primary storage, and the one rule that confines every path to it.

```
<url>/.hoststack-storage          SharedMountPoint marker: {"uuid": ...} (proves the shared filesystem)
<url>/heartbeat/<host uuid>       SharedMountPoint: each host's last heartbeat (JSON, rewritten)
<url>/images/<image>/image.<fmt>  the image cache: verified, read-only (0444)
<url>/images/<image>/image.json   what was verified: sha256, size, format, virtual size
<url>/images/<image>/pins/<host>  a host uses the image outside a volume (an ISO in a cdrom)
<url>/images/.partial/<image>.<host>.part   a download in progress (resumed with a Range request)
<url>/images/.trash/<image>.<random>        a collected image, being removed
<url>/volumes/<volume>/volume.json          the volume's record: its files, snapshots, active file
<url>/volumes/<volume>/<file>.qcow2         its files; backing files named relative to this directory
<url>/locks/<volume>                        held (flock) by the host working on the volume's files
<url>/.trash/<volume>.<random>              a deleted volume's directory, being removed
<url>/exports/<image>.qcow2       an image made from a volume, for the image store to take
<url>/exports/<image>.<volume>.part         one being copied from the volume
```

Every name in a path is an `Ident` (letters, digits, `-`, `_`) checked by the wire model, and every path
is checked again by `confine` before use: nothing a coordinator sends can name a file outside `<url>`.
Backing files are named relative to the overlay (`../../images/<image>/image.raw`), so a volume's
directory means the same on every host that mounts the storage (and after a copy to another host).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agentkit import paths
from kvmagent.errors import PathEscapes

MARKER = ".hoststack-storage"
RECORD = "volume.json"


def confine(root: str | Path, path: str | Path, what: str = "path") -> Path:
    """`path` (relative to `root`, or absolute) resolved, symlinks and `..` included; PathEscapes unless it
    lies inside `root` (itself resolved: a root that is a symlink is fine)."""
    try:
        return Path(paths.confine(str(path), str(root), [], what))
    except paths.PathOutside as e:
        raise PathEscapes(str(e)) from None


@dataclass(frozen=True)
class Layout:
    """Paths of one storage's directory (`root`); `confine` guards the ones built from outside names."""

    root: Path

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    def heartbeat(self, host_uuid: str) -> Path:
        return self.confined("heartbeat", host_uuid)

    @property
    def images(self) -> Path:
        return self.root / "images"

    def image_dir(self, image_uuid: str) -> Path:
        return self.confined("images", image_uuid)

    def image_file(self, image_uuid: str, fmt: str) -> Path:
        return self.image_dir(image_uuid) / f"image.{fmt}"

    @property
    def partials(self) -> Path:
        return self.images / ".partial"

    def partial(self, image_uuid: str, host_uuid: str) -> Path:
        return confine(self.root, self.partials / f"{image_uuid}.{host_uuid}.part")

    def pin(self, image_uuid: str, host_uuid: str) -> Path:
        return self.image_dir(image_uuid) / "pins" / host_uuid

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    def volume_dir(self, volume_uuid: str) -> Path:
        return self.confined("volumes", volume_uuid)

    def volume_lock(self, volume_uuid: str) -> Path:
        return self.confined("locks", volume_uuid)

    def volume_file(self, volume_uuid: str, file_id: str) -> Path:
        return self.volume_dir(volume_uuid) / f"{file_id}.qcow2"

    def record(self, volume_uuid: str) -> Path:
        return self.volume_dir(volume_uuid) / RECORD

    @property
    def trash(self) -> Path:
        """Where a deleted volume's directory is renamed to, then removed."""
        return self.root / ".trash"

    def export_file(self, image_uuid: str) -> Path:
        return self.confined("exports", f"{image_uuid}.qcow2")

    def confined(self, *parts: str) -> Path:
        return confine(self.root, Path(*parts))

    @staticmethod
    def backing_name(image_fmt: str, image_uuid: str) -> str:
        """How a volume's base file names its cached image (relative to the volume's directory)."""
        return f"../../images/{image_uuid}/image.{image_fmt}"
