"""`hs-ctl backup`: etcd's snapshot into a new file with its checksum, then the oldest of that name removed.

`<file>.part` is created first (mode 0600, exclusively: a backup of the same name running at the same
time is refused, not disturbed), then etcdctl writes the snapshot over it, synced. The file is hashed
once, which both makes its checksum and checks the sha256 etcd appended to its database; it gets its
name only then, so a failed backup leaves no file that looks like a backup. Only then are backups of
the same name beyond `keep` removed, and the newest backup recorded in etcd (`/metrics` shows its age).
Pruning counts one name only, so the `pre-upgrade` backups are not crowded out by the scheduled ones.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentkit.durable import fsync_dir
from coordinator.ctl import backupfile
from coordinator.ctl.errors import BackupFailed, Busy, EtcdUnavailable
from coordinator.ctl.etcdctl import Etcdctl
from coordinator.domain import backups
from coordinator.etcd import keys

log = logging.getLogger(__name__)
DEFAULT_KEEP = 60  # as zstack-ctl dump_mysql


@dataclass
class Backup:
    path: Path
    sha256: str
    bytes: int
    seconds: float
    removed: list[Path] = field(default_factory=list)
    recorded: bool = False


def _claim(part: Path) -> None:
    try:
        os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise Busy(f"{part} exists: another backup of this name is being written (or one crashed: remove it)"
                   ) from None


def take(save: Callable[[Path], None], directory: Path, name: str = backupfile.DEFAULT_NAME,
         keep: int = DEFAULT_KEEP, now: dt.datetime | None = None) -> Backup:
    """Back up etcd into `directory` (`save(path)` puts etcd's snapshot at `path`, complete and synced,
    or raises BackupFailed); keep the `keep` newest backups of `name`."""
    backupfile.check_name(name)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = backupfile.file_for(directory, name, now or dt.datetime.now(dt.UTC))
    part = path.with_name(path.name + backupfile.PARTIAL)
    t0 = time.monotonic()
    _claim(part)
    try:
        save(part)
        sha256, intact = backupfile.sha256_of(part)
        size = part.stat().st_size
        if not intact:
            raise BackupFailed(f"etcd's snapshot ({size} bytes) failed its own checksum; no backup was kept")
        sums = backupfile.checksum_file(path)
        sums_part = sums.with_name(sums.name + backupfile.PARTIAL)
        sums_part.write_text(backupfile.checksum_line(path, sha256))
        os.replace(sums_part, sums)
        os.replace(part, path)
        fsync_dir(directory)
    except OSError as e:
        raise BackupFailed(f"writing {path}: {e}; no backup was kept") from e
    finally:
        part.unlink(missing_ok=True)
    return Backup(path, sha256, size, time.monotonic() - t0, backupfile.prune(directory, name, keep))


def take_and_record(etcd: Etcdctl, directory: Path, name: str, keep: int, timeout: float) -> Backup:
    """`take` with etcdctl, its snapshot bounded by `timeout`, then the record in etcd (a failure to
    record is logged: the file is good)."""
    b = take(lambda part: etcd.snapshot(part, timeout), directory, name, keep)
    record = backups.BackupRecord(at=time.time(), file=str(b.path), sha256=b.sha256, bytes=b.bytes,
                                  node=os.uname().nodename)
    try:
        etcd.put(keys.BACKUP, backups.encoded(record))
        b.recorded = True
    except EtcdUnavailable as e:
        log.warning("backup %s is complete, but etcd did not take its record: %s", b.path, e)
    return b
