"""The backup file format: names, the checksum beside each file, verification, and pruning by name.

A backup is `<dir>/<name>-<UTC time>.db`: etcd's snapshot exactly as its Maintenance API streams it, the
bolt database followed by the 32-byte sha256 of that database (which `etcdctl snapshot restore` checks
too), and beside it `<same>.db.sha256`, the sha256 of the whole file in `sha256sum` format (so
`sha256sum -c` works in the backup directory, and a copy elsewhere can be checked before it is used).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

from coordinator.ctl.errors import InvalidBackup

SUFFIX = ".db"
CHECKSUM = ".sha256"
PARTIAL = ".part"
TRAILER = 32  # etcd appends the sha256 of the database
DEFAULT_NAME = "hoststack-etcd"
_STAMP = r"\d{8}T\d{6}\.\d{3}Z"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(name: str) -> str:
    """A backup name is a file-name prefix, not a path."""
    if not _NAME.fullmatch(name) or name.endswith(SUFFIX):
        raise InvalidBackup(f"backup name {name!r}: use letters, digits, '.', '_' and '-' (no path, no {SUFFIX})",
                            field="file_name")
    return name


def file_for(directory: Path, name: str, at: dt.datetime) -> Path:
    """`<dir>/<name>-YYYYmmddTHHMMSS.mmmZ.db`: sorting the names of one name sorts them by time."""
    t = at.astimezone(dt.UTC)
    return directory / f"{name}-{t:%Y%m%dT%H%M%S}.{t.microsecond // 1000:03d}Z{SUFFIX}"


def checksum_file(path: Path) -> Path:
    return path.with_name(path.name + CHECKSUM)


def checksum_line(path: Path, sha256: str) -> str:
    return f"{sha256}  {path.name}\n"


def write_checksum(target: Path, path: Path, sha256: str) -> None:
    """`path`'s checksum line written at `target` and synced (a restore needs it: `verify`)."""
    with open(target, "w") as f:
        f.write(checksum_line(path, sha256))
        f.flush()
        os.fsync(f.fileno())


def of_name(directory: Path, name: str) -> list[Path]:
    """The complete backups of `name` in `directory`, newest first."""
    pattern = re.compile(re.escape(name) + "-" + _STAMP + re.escape(SUFFIX))
    return sorted((p for p in directory.glob(f"{name}-*{SUFFIX}") if pattern.fullmatch(p.name)), reverse=True)


def prune(directory: Path, name: str, keep: int, stale: dt.datetime) -> list[Path]:
    """Remove the backups of `name` beyond the `keep` newest, and the partial files of its backups that
    started before `stale` (one a crash or power loss ended: no running backup is that old; each may be as
    large as etcd's data); the backups that went."""
    gone = of_name(directory, name)[keep:]
    for p in gone:
        checksum_file(p).unlink(missing_ok=True)
        p.unlink(missing_ok=True)
    partial = re.compile(re.escape(name) + "-(" + _STAMP + ")" + re.escape(SUFFIX) + rf"(?:{CHECKSUM})?(?:\{PARTIAL})+")
    for p in directory.glob(f"{name}-*{PARTIAL}"):
        if (m := partial.fullmatch(p.name)) and dt.datetime.strptime(m[1], "%Y%m%dT%H%M%S.%f%z") < stale:
            p.unlink(missing_ok=True)
    return gone


class Digest:
    """A snapshot file's checksums from its bytes fed in order, in pieces of any size: the sha256 of the
    whole file, and whether its last 32 bytes are the sha256 of everything before them."""

    def __init__(self) -> None:
        import hashlib  # here: hs-ctl backup loads OpenSSL's library once etcdctl runs, not before

        self._db = hashlib.sha256()  # of all but the last TRAILER bytes seen so far
        self._tail = b""  # the last TRAILER bytes seen so far
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if len(chunk) < TRAILER:
            chunk = self._tail + chunk
        else:
            self._db.update(self._tail)
        self._db.update(memoryview(chunk)[:-TRAILER])
        self._tail = bytes(chunk[-TRAILER:])

    def result(self) -> tuple[str, bool]:
        whole = self._db.copy()
        whole.update(self._tail)
        return whole.hexdigest(), self.size > TRAILER and self._db.digest() == self._tail


def sha256_of(path: Path) -> tuple[str, bool]:
    """(sha256 of the whole file, whether its last 32 bytes are the sha256 of everything before them)."""
    digest = Digest()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.result()


def verify(path: Path) -> str:
    """The file's sha256 once it is known good, else `InvalidBackup` saying what is wrong with it."""
    if not path.is_file():
        raise InvalidBackup(f"{path}: {'a directory, not a' if path.is_dir() else 'no such'} backup file")
    sums = checksum_file(path)
    try:
        recorded = sums.read_text().split()[0].lower()
    except OSError as e:
        raise InvalidBackup(f"{path}: cannot read its checksum file {sums.name} ({e.strerror}); a backup is only "
                            "restored once it is verified") from None
    except IndexError:
        raise InvalidBackup(f"{path}: its checksum file {sums.name} is empty; a backup is only restored once it "
                            "is verified") from None
    try:
        actual, intact = sha256_of(path)
    except OSError as e:
        raise InvalidBackup(f"{path}: cannot read it: {e}") from None
    if actual != recorded:
        raise InvalidBackup(f"{path}: checksum mismatch: {sums.name} says {recorded}, the file is {actual} "
                            "(damaged or not this backup); nothing was changed")
    if not intact:
        raise InvalidBackup(f"{path}: not an etcd snapshot (its embedded sha256 does not match); nothing was "
                            "changed")
    return actual

