"""Files that survive a crash: written beside their place, fsynced, renamed over it, the directory fsynced.

Agents keep their state (volume records, image records, download states, markers) and the control node its
backups on local disks that may lose power: a rename is durable only once its directory is synced.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the renames and creations inside directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` by `data` so that a crash leaves either the old content or the new, never a part; the file
    has exactly `mode` whatever the umask. The temporary file beside it has a name of its own
    (`.<name>.<random>.tmp`): hosts sharing a filesystem write one file at once (a shared storage's marker,
    its image cache's records), and each must rename its own; one a failed write leaves is removed."""
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:  # os.write may write less (a signal, a filesystem nearly full): the rest, or its error
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
