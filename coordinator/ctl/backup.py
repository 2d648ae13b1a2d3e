"""`hs-ctl backup`: etcd's snapshot into a new file with its checksum, then the oldest of that name removed.

The snapshot streams into `<file>.part` (mode 0600, created exclusively), hashed on the way; it gets its
name only once it is complete, fsync'd and its embedded sha256 (etcd's own) checked, so a failed backup
leaves no file that looks like a backup. Only then are backups of the same name beyond `keep` removed,
and the newest backup recorded in etcd (`/metrics` shows its age). Pruning counts one name only, so the
`pre-upgrade` backups are not crowded out by the scheduled ones.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agentkit.durable import fsync_dir
from coordinator.ctl import backupfile
from coordinator.ctl.errors import BackupFailed, Busy
from coordinator.domain import backups
from coordinator.etcd.store import Store, StoreUnavailable

log = logging.getLogger(__name__)
DEFAULT_KEEP = 60  # as zstack-ctl dump_mysql


class Source(Protocol):
    """What a backup needs of the store (coordinator.etcd.store.Store)."""

    def backup(self) -> AsyncIterator[bytes]: ...


@dataclass
class Backup:
    path: Path
    sha256: str
    bytes: int
    seconds: float
    removed: list[Path] = field(default_factory=list)
    recorded: bool = False


def _create(part: Path) -> int:
    try:
        return os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise Busy(f"{part} exists: another backup of this name is being written (or one crashed: remove it)"
                   ) from None


async def _stream(source: Source, fd: int) -> tuple[str, int]:
    """Write the snapshot to `fd`: (sha256 of the file, size); BackupFailed unless etcd's own hash holds."""
    db, tail, size = hashlib.sha256(), b"", 0
    with open(fd, "wb") as f:
        async for chunk in source.backup():
            f.write(chunk)
            size += len(chunk)
            if len(chunk) < backupfile.TRAILER:
                chunk = tail + chunk
            else:
                db.update(tail)
            db.update(memoryview(chunk)[:-backupfile.TRAILER])  # all but the last 32 bytes is the database
            tail = chunk[-backupfile.TRAILER:]
        f.flush()
        os.fsync(f.fileno())
    if size <= backupfile.TRAILER or db.digest() != tail:
        raise BackupFailed(f"etcd's snapshot ({size} bytes) failed its own checksum; no backup was kept")
    whole = db.copy()
    whole.update(tail)
    return whole.hexdigest(), size


async def take(source: Source, directory: Path, name: str = backupfile.DEFAULT_NAME, keep: int = DEFAULT_KEEP,
               now: dt.datetime | None = None) -> Backup:
    """Back up etcd into `directory`; keep the `keep` newest backups of `name`."""
    backupfile.check_name(name)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = backupfile.file_for(directory, name, now or dt.datetime.now(dt.UTC))
    part = path.with_name(path.name + backupfile.PARTIAL)
    t0 = time.monotonic()
    fd = _create(part)
    try:
        sha256, size = await _stream(source, fd)
        sums = backupfile.checksum_file(path)
        sums_part = sums.with_name(sums.name + backupfile.PARTIAL)
        sums_part.write_text(backupfile.checksum_line(path, sha256))
        os.replace(sums_part, sums)
        os.replace(part, path)
        fsync_dir(directory)
    except StoreUnavailable as e:
        raise BackupFailed(f"etcd did not give its snapshot: {e}; no backup was kept") from e
    except OSError as e:
        raise BackupFailed(f"writing {path}: {e}; no backup was kept") from e
    finally:
        part.unlink(missing_ok=True)
    return Backup(path, sha256, size, time.monotonic() - t0, backupfile.prune(directory, name, keep))


async def take_and_record(store: Store, directory: Path, name: str, keep: int, timeout: float) -> Backup:
    """`take`, bounded by `timeout`, then the record in etcd (a failure to record is logged: the file is good)."""
    try:
        async with asyncio.timeout(timeout):
            b = await take(store, directory, name, keep)
    except TimeoutError:
        raise BackupFailed(f"the backup took more than {timeout:g} s; no backup was kept") from None
    record = backups.BackupRecord(at=time.time(), file=str(b.path), sha256=b.sha256, bytes=b.bytes,
                                  node=socket.gethostname())
    try:
        await backups.record(store, record)
        b.recorded = True
    except StoreUnavailable as e:
        log.warning("backup %s is complete, but etcd did not take its record: %s", b.path, e)
    return b
