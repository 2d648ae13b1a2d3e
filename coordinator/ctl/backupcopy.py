"""`hs-ctl backup --copy-to DIR` (or hs-ctl's `backup_copy_to`): a complete backup copied off the node.

DIR is meant to be another filesystem (an NFS, CIFS or sshfs mount, a removable disk), so that a node that dies
does not take its only backups with it. The copy is written as `<file>.part` there (exclusively, 0600), synced,
its cached pages dropped and read back from DIR to check its sha256, then its `.sha256` is written and synced, and
only then does the copy get its name and DIR get synced: a half-copied file never looks like a backup. The backups
of that name in DIR beyond the keep amount then go, by the backup directory's own rule (`backupfile.prune`).
A DIR on the filesystem of the node's backups is refused: a mount point that is not mounted is an ordinary
directory of the node's disk, where a "copy" would leave with the node. The backup on the node is complete
before any of this starts, and stays whatever the copy meets.
Loaded only when a copy is asked for, after the snapshot (a backup without one imports none of it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from pathlib import Path
from typing import NamedTuple

from agentkit.durable import fsync_dir
from coordinator.ctl import backupfile
from coordinator.ctl.backup import Backup
from coordinator.ctl.errors import CopyFailed

CHUNK = 1 << 20


class Copy(NamedTuple):
    """A verified copy: where it is, and the older backups of its name that went from its directory."""

    path: Path
    removed: tuple[Path, ...] = ()


def copy(b: Backup, directory: Path, name: str, keep: int, timeout: float) -> Copy:
    """Copy backup `b` and its checksum into `directory`, verified there; keep the `keep` newest of `name` there
    (and remove what copies of `name` that started more than `timeout` ago left partial). CopyFailed names
    `directory` and why, and says the backup on the node is kept."""

    def failed(reason: str) -> CopyFailed:
        return CopyFailed(f"copy to {directory}: {reason}; the backup {b.path} is complete and kept on this node, "
                          "not copied")

    if not directory.is_dir():  # never made here: a missing mount point must not become a local directory
        raise failed("not a directory" if directory.exists() else "no such directory (not mounted?)")
    if filesystem(directory) == filesystem(b.path.parent):
        raise failed(f"it is on the filesystem of the backups here ({b.path.parent}), not another one (not mounted?)")
    path = directory / b.path.name
    part = path.with_name(path.name + backupfile.PARTIAL)
    sums = backupfile.checksum_file(path)
    sums_part = sums.with_name(sums.name + backupfile.PARTIAL)
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise failed(f"{part.name} exists: another copy of this backup is being written (or one crashed)") from None
    except OSError as e:
        raise failed(e.strerror or str(e)) from None
    try:
        _write(fd, b.path)
        sha256, _ = backupfile.sha256_of(part)  # read back from `directory`, the cache dropped by `_write`
        if sha256 != b.sha256:
            raise failed(f"the copy reads back as sha256 {sha256}, not the backup's {b.sha256}")
        backupfile.write_checksum(sums_part, path, sha256)
        os.replace(sums_part, sums)
        os.replace(part, path)
        fsync_dir(directory)
        stale = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=timeout)
        return Copy(path, tuple(backupfile.prune(directory, name, keep, stale)))
    except OSError as e:
        raise failed(e.strerror or str(e)) from None
    finally:
        with contextlib.suppress(OSError):  # a mount gone meanwhile: its error is the one to say
            part.unlink(missing_ok=True)
            sums_part.unlink(missing_ok=True)


def filesystem(path: Path) -> int:
    """The filesystem `path` is on (its device number)."""
    return path.stat().st_dev


def _write(fd: int, source: Path) -> None:
    """`source`'s bytes into `fd`, synced, then closed with its cached pages dropped, so that reading the copy
    again asks its filesystem (a network one: its server) for them, as far as the kernel lets."""
    with open(fd, "wb") as out, open(source, "rb") as f:
        while chunk := f.read(CHUNK):
            out.write(chunk)
        out.flush()
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
