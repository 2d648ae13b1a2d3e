"""hs-ctl backup without etcd: a function stands in for etcdctl's snapshot; files in a temporary directory."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from coordinator.ctl import backup, backupfile
from coordinator.ctl.errors import BackupFailed, Busy, EtcdUnavailable, InvalidBackup
from coordinator.domain import backups
from coordinator.etcd import keys

DB = bytes(range(256)) * 400  # stands in for the bolt file


class Snapshot:
    """etcdctl snapshot save: the database followed by its sha256, written to `partial(target)` in pieces
    and renamed to `target` once complete (`direct`: written at `target` at once)."""

    def __init__(self, db: bytes = DB, trailer: bytes | None = None, fails: str | None = None,
                 direct: bool = False):
        self.db, self.fails, self.direct = db, fails, direct
        self.trailer = hashlib.sha256(db).digest() if trailer is None else trailer

    @staticmethod
    def partial(target: Path) -> Path:
        return Path(f"{target}.part")

    def snapshot(self, target: Path, timeout: float, started: Callable[[], None] = lambda: None) -> None:
        if self.fails:
            raise BackupFailed(f"etcd did not give its snapshot: {self.fails}; no backup was kept")
        started()
        data = self.db + self.trailer
        if self.direct:
            target.write_bytes(data)
            return
        with open(self.partial(target), "wb") as f:
            for at in range(0, len(data), 7001):
                f.write(data[at:at + 7001])
                f.flush()
                time.sleep(0.001)
        os.replace(self.partial(target), target)


class Etcdctl(Snapshot):
    """What `take_and_record` uses of coordinator.ctl.etcdctl.Etcdctl, and of its Recorder."""

    def __init__(self, put_fails: bool = False, missing: bool = False):
        super().__init__()
        self.put_fails, self.missing = put_fails, missing
        self.puts: list[tuple[str, str]] = []
        self.key = ""

    def recorder(self, key: str) -> Etcdctl:
        self.key = key
        return self

    def start(self) -> None:
        if self.missing:
            raise FileNotFoundError(2, "No such file or directory", "etcdctl")

    def __enter__(self) -> Etcdctl:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def send(self, value: str) -> None:
        self.puts.append((self.key, value))

    def wait(self) -> None:
        if self.put_fails:
            raise EtcdUnavailable("etcd did not take /hs/backup: etcd went away after the snapshot")


def at(second: int) -> dt.datetime:
    return dt.datetime(2027, 1, 2, 3, 4, second, 5000, tzinfo=dt.UTC)


@pytest.mark.parametrize("direct", [False, True])
def test_a_backup_is_the_snapshot_with_its_sha256_beside_it(tmp_path: Path, direct: bool):
    b = backup.take(Snapshot(direct=direct), tmp_path, now=at(5))
    assert b.path == tmp_path / "hoststack-etcd-20270102T030405.005Z.db"
    data = DB + hashlib.sha256(DB).digest()
    assert b.path.read_bytes() == data and b.bytes == len(data)
    assert b.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / (b.path.name + ".sha256")).read_text() == f"{b.sha256}  {b.path.name}\n"
    assert b.path.stat().st_mode & 0o777 == 0o600
    assert backupfile.verify(b.path) == b.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == [b.path.name, b.path.name + ".sha256"]


@pytest.mark.parametrize("snapshot, cause", [
    (Snapshot(trailer=b"\0" * 32), "failed its own checksum"),
    (Snapshot(trailer=b"\0" * 32, direct=True), "failed its own checksum"),
    (Snapshot(db=b"", trailer=b""), "failed its own checksum"),
    (Snapshot(fails="etcd went away"), "etcd did not give its snapshot: etcd went away"),
])
def test_a_failed_backup_leaves_no_file(tmp_path: Path, snapshot: Snapshot, cause: str):
    with pytest.raises(BackupFailed, match=cause):
        backup.take(snapshot, tmp_path, now=at(5))
    assert list(tmp_path.iterdir()) == []


def test_the_checksum_file_is_synced_before_the_backup_gets_its_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A power loss right after `hs-ctl backup` said done must not leave a backup whose checksum file is empty:
    restore refuses a backup it cannot verify."""
    synced: list[str] = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or fsync(fd))
    b = backup.take(Snapshot(), tmp_path, now=at(5))
    assert f"{b.path}.sha256.part" in synced


def test_a_checksum_file_that_cannot_be_written_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A full disk can refuse the checksum file after the snapshot fitted."""
    replace = os.replace

    def full(src: Path, dst: Path) -> None:
        if str(src).endswith(".sha256.part"):
            raise OSError(28, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(BackupFailed, match="No space left on device.*no backup was kept"):
        backup.take(Snapshot(), tmp_path, now=at(5))
    assert list(tmp_path.iterdir()) == []


def test_keep_amount_counts_backups_of_the_same_name_only(tmp_path: Path):
    (tmp_path / "pre-upgrade-20200101T000000.000Z.db").write_bytes(b"x")
    made = [backup.take(Snapshot(), tmp_path, "daily", keep=3, now=at(s)) for s in range(5)]
    assert [len(b.removed) for b in made] == [0, 0, 0, 1, 1]
    assert backupfile.of_name(tmp_path, "daily") == [b.path for b in reversed(made[2:])]
    assert (tmp_path / "pre-upgrade-20200101T000000.000Z.db").exists()
    assert not (tmp_path / (made[0].path.name + ".sha256")).exists()


def test_what_a_crashed_backup_left_goes_with_the_next_backup_of_its_name(tmp_path: Path):
    """A power loss during a backup leaves its partial files (up to etcd's size) that nothing else removes;
    a backup of the same name still running (started within the timeout) is left alone, as other names are."""
    def left(name: str, second: int) -> list[Path]:
        path = backupfile.file_for(tmp_path, name, at(second))
        files = [path.with_name(path.name + tail) for tail in (".part", ".part.part", ".sha256.part")]
        for f in files:
            f.write_bytes(b"partial")
        return files

    crashed, running, other = left("x", 0), left("x", 50), left("y", 0)
    b = backup.take(Snapshot(), tmp_path, "x", timeout=30, now=at(55))
    assert not any(f.exists() for f in crashed)
    assert all(f.exists() for f in running + other)
    assert backupfile.of_name(tmp_path, "x") == [b.path]


def test_a_backup_of_the_same_name_being_written_is_not_disturbed(tmp_path: Path):
    part = backupfile.file_for(tmp_path, "x", at(5))
    part = part.with_name(part.name + ".part")
    part.write_bytes(b"someone else's")
    with pytest.raises(Busy):
        backup.take(Snapshot(), tmp_path, "x", now=at(5))
    assert part.read_bytes() == b"someone else's"


def test_a_backup_directory_it_cannot_write_is_named_and_no_backup_kept(tmp_path: Path):
    """A message, not a traceback (a directory the timer's unit leaves read-only: test_control_node)."""
    (tmp_path / "file").write_text("")
    with pytest.raises(BackupFailed, match=f"backup directory {tmp_path}/file: a file, not a directory; no backup was"):
        backup.take(Snapshot(), tmp_path / "file", "x", now=at(5))
    with pytest.raises(BackupFailed, match=f"backup directory {tmp_path}/file/sub: Not a directory; no backup was"):
        backup.take(Snapshot(), tmp_path / "file" / "sub", "x", now=at(5))
    assert (tmp_path / "file").read_text() == ""


def test_the_snapshot_is_hashed_while_it_is_written(tmp_path: Path):
    growing, complete = tmp_path / "x.part", tmp_path / "x"
    follow = backup.Follow(growing)
    follow.start()
    data = DB + hashlib.sha256(DB).digest()
    writer = threading.Thread(target=lambda: Snapshot().snapshot(complete, 10))
    writer.start()
    writer.join()
    assert follow.result(complete) == (hashlib.sha256(data).hexdigest(), True) == backupfile.sha256_of(complete)


def test_a_hash_of_another_file_than_the_complete_one_is_no_result(tmp_path: Path):
    growing, complete = tmp_path / "x.part", tmp_path / "x"
    follow = backup.Follow(growing)
    follow.start()
    growing.write_bytes(DB)  # an attempt that failed: etcdctl removes its file, the next attempt writes anew
    time.sleep(0.05)
    growing.unlink()
    complete.write_bytes(DB)
    assert follow.result(complete) is None
    never = backup.Follow(tmp_path / "never")
    never.start()
    assert never.result(complete) is None


@pytest.mark.parametrize("name", ["", "../x", "a/b", "x.db", "-x"])
def test_a_backup_name_is_a_file_name_prefix(name: str):
    with pytest.raises(InvalidBackup):
        backupfile.check_name(name)


def test_the_backup_is_recorded_in_etcd(tmp_path: Path):
    etcd = Etcdctl()
    b = backup.take_and_record(etcd, tmp_path, "x", 2, timeout=10)  # type: ignore[arg-type]
    [(key, value)] = etcd.puts
    assert b.recorded and key == keys.BACKUP
    assert json.loads(value) | {"at": 0, "node": ""} == {"at": 0, "file": str(b.path), "sha256": b.sha256,
                                                         "bytes": b.bytes, "node": ""}


def test_without_etcdctl_there_is_no_backup(tmp_path: Path):
    with pytest.raises(BackupFailed, match=r"running etcdctl: .*No such file or directory.*; no backup was kept"):
        backup.take_and_record(Etcdctl(missing=True), tmp_path, "x", 2, timeout=10)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_record_failure_keeps_the_backup(tmp_path: Path):
    b = backup.take_and_record(Etcdctl(put_fails=True), tmp_path, "x", 2, timeout=10)  # type: ignore[arg-type]
    assert not b.recorded and b.path.exists()


async def test_the_record_reads_back_and_a_foreign_value_is_no_record():
    from coordinator.etcd.store import Entry

    class Store:
        value: object = None

        async def get(self, key: str) -> Entry | None:
            return Entry(key, self.value, 1, 1)

    store, rec = Store(), backups.BackupRecord(at=1.5, file="/b/x.db", sha256="ab" * 32, bytes=10, node="n1")
    store.value = json.loads(backups.encoded(rec))  # as the store reads back what etcdctl put
    assert store.value == {"at": 1.5, "file": "/b/x.db", "sha256": "ab" * 32, "bytes": 10, "node": "n1"}
    assert await backups.last(store) == rec  # type: ignore[arg-type]
    for junk in ({"at": 1.5}, {**store.value, "at": "yesterday"}, [1]):
        store.value = junk
        assert await backups.last(store) is None  # type: ignore[arg-type]
