"""`hs-ctl backup`: etcd's snapshot into a new file with its checksum, then the oldest of that name removed.

`<file>.part` is created first (mode 0600, exclusively: a backup of the same name running at the same
time is refused, not disturbed), then etcdctl writes the snapshot over it, synced. The file is hashed
once, which both makes its checksum and checks the sha256 etcd appended to its database, and that while
etcdctl writes it (`Follow`), so the check costs next to nothing once the snapshot is complete. It gets
its name only then, after its checksum file (synced too: a restore needs it), so a failed backup leaves no
file that looks like a backup. Only then are backups of the same name beyond `keep` removed, and what
backups of the name that started more than the timeout ago left partial (a crash's), while etcd records
the newest backup (`/metrics` shows its age).
Pruning counts one name only, so the `pre-upgrade` backups are not crowded out by the scheduled ones.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Protocol

from agentkit.durable import fsync_dir
from coordinator.ctl import backupfile
from coordinator.ctl.errors import BackupFailed, Busy, EtcdUnavailable
from coordinator.ctl.etcdctl import Etcdctl
from coordinator.domain import backups
from coordinator.etcd import keys

DEFAULT_KEEP = 60  # as zstack-ctl dump_mysql
POLL = 0.005  # seconds between looks at a snapshot being written that has nothing new


class Source(Protocol):
    """What a backup needs of etcd (coordinator.ctl.etcdctl.Etcdctl)."""

    def snapshot(self, target: Path, timeout: float, started: Callable[[], None]) -> None:
        """etcd's snapshot at `target`, complete and synced, or BackupFailed; `started()` is called once
        its writer runs (what else the backup runs starts then, not before it)."""

    def partial(self, target: Path) -> Path:
        """Where the snapshot grows while `snapshot(target)` runs."""


class Backup(NamedTuple):  # not a dataclass: this job does not import dataclasses (agentkit.configfile)
    """A backup kept: its file, checksum and size, the seconds it took, the older ones it removed."""

    path: Path
    sha256: str
    bytes: int
    seconds: float
    removed: tuple[Path, ...] = ()
    recorded: bool = False


def _claim(part: Path) -> None:
    """`part` created, exclusively, in its directory (made if missing): the backup's, or Busy, or BackupFailed
    naming the path it cannot write (a read-only or foreign backup directory is the operator's to fix)."""
    try:
        part.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:  # mkdir's error for a file of that name
        raise BackupFailed(f"backup directory {part.parent}: a file, not a directory; no backup was kept") from None
    except OSError as e:
        raise BackupFailed(f"backup directory {part.parent}: {e.strerror or e}; no backup was kept") from None
    try:
        os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise Busy(f"{part} exists: another backup of this name is being written (or one crashed: remove it)"
                   ) from None
    except OSError as e:
        raise BackupFailed(f"writing {part}: {e.strerror or e}; no backup was kept") from None


class Follow(threading.Thread):
    """Hashes the snapshot at `path` as it is written there (and renamed away once complete)."""

    def __init__(self, path: Path):
        super().__init__(name="backup-hash", daemon=True)
        self.path, self.ended = path, threading.Event()
        self.digest: backupfile.Digest | None = None  # made in the thread, which starts with etcdctl
        self.file: tuple[int, int] | None = None  # (device, inode) of the file hashed

    def run(self) -> None:
        self.digest = digest = backupfile.Digest()
        while True:  # etcdctl creates it once it has reached etcd
            try:
                f = open(self.path, "rb", buffering=0)
                break
            except FileNotFoundError:
                if self.ended.wait(POLL):
                    return
        with f:
            st = os.fstat(f.fileno())
            self.file = st.st_dev, st.st_ino
            while True:
                ended = self.ended.is_set()  # all it wrote before it ended is read below
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                if ended:
                    return
                self.ended.wait(POLL)

    def result(self, complete: Path) -> tuple[str, bool] | None:
        """The checksums, once the writer has ended, if the file hashed is `complete` as it is now (not
        an attempt that failed, nor one whose file it never saw); None else (also when never started)."""
        if self.ident is None:
            return None
        self.ended.set()
        self.join()
        try:
            st = complete.stat()
        except FileNotFoundError:
            return None
        if self.digest is None or self.file != (st.st_dev, st.st_ino) or self.digest.size != st.st_size:
            return None
        return self.digest.result()


def take(source: Source, directory: Path, name: str = backupfile.DEFAULT_NAME, keep: int = DEFAULT_KEEP,
         timeout: float = 3600, now: dt.datetime | None = None) -> Backup:
    """Back up etcd into `directory`, its snapshot bounded by `timeout`; keep the `keep` newest backups
    of `name`."""
    now = now or dt.datetime.now(dt.UTC)
    b = _write(source, directory, name, timeout, now)
    return b._replace(removed=tuple(backupfile.prune(directory, name, keep, now - dt.timedelta(seconds=timeout))))


def _write(source: Source, directory: Path, name: str, timeout: float, now: dt.datetime,
           meanwhile: Callable[[], None] = lambda: None) -> Backup:
    """The snapshot, checked, with its checksum file, under its name (nothing else of `name` touched);
    the hashing, then `meanwhile()`, start once the snapshot's writer runs."""
    backupfile.check_name(name)
    path = backupfile.file_for(directory, name, now)
    part = path.with_name(path.name + backupfile.PARTIAL)
    sums = backupfile.checksum_file(path)
    sums_part = sums.with_name(sums.name + backupfile.PARTIAL)
    t0 = time.monotonic()
    _claim(part)
    follow = Follow(source.partial(part))

    def started() -> None:
        follow.start()
        meanwhile()

    try:
        try:
            source.snapshot(part, timeout, started)
        finally:
            checked = follow.result(part)
        sha256, intact = checked or backupfile.sha256_of(part)
        os.chmod(part, 0o600)  # whatever mode etcdctl gave it: etcd's data is the cloud's secrets too
        size = part.stat().st_size
        if not intact:
            raise BackupFailed(f"etcd's snapshot ({size} bytes) failed its own checksum; no backup was kept")
        backupfile.write_checksum(sums_part, path, sha256)
        os.replace(sums_part, sums)
        os.replace(part, path)
        fsync_dir(directory)
    except OSError as e:
        raise BackupFailed(f"writing {path}: {e}; no backup was kept") from e
    finally:
        part.unlink(missing_ok=True)
        sums_part.unlink(missing_ok=True)
    return Backup(path, sha256, size, time.monotonic() - t0)


def take_and_record(etcd: Etcdctl, directory: Path, name: str, keep: int, timeout: float,
                    meanwhile: Callable[[], None] = lambda: None) -> Backup:
    """`take`, and the record in etcd (a failure to record is logged: the file is good). The record's
    etcdctl starts right after the snapshot's, so that it has reached etcd by the time the record is
    known, and etcd takes the record while the oldest backups are removed; then `meanwhile()` runs."""
    with etcd.recorder(keys.BACKUP) as recorder:
        def started() -> None:
            try:
                recorder.start()
            except OSError as e:  # etcdctl cannot run
                raise BackupFailed(f"running etcdctl: {e}; no backup was kept") from None
            meanwhile()

        now = dt.datetime.now(dt.UTC)
        b = _write(etcd, directory, name, timeout, now, started)
        recorder.send(backups.encoded(backups.BackupRecord(at=time.time(), file=str(b.path), sha256=b.sha256,
                                                           bytes=b.bytes, node=os.uname().nodename)))
        b = b._replace(removed=tuple(backupfile.prune(directory, name, keep, now - dt.timedelta(seconds=timeout))))
        try:
            recorder.wait()
        except EtcdUnavailable as e:
            import logging  # here: loaded (and set up, `meanwhile`) while the snapshot was written

            logging.getLogger(__name__).warning("backup %s is complete, but etcd did not take its record: %s",
                                                b.path, e)
            return b
    return b._replace(recorded=True)
