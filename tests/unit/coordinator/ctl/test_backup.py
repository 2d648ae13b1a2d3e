"""hs-ctl backup without etcd: a stream stands in for etcd's snapshot; files in a temporary directory."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coordinator.ctl import backup, backupfile
from coordinator.ctl.errors import BackupFailed, Busy, InvalidBackup
from coordinator.etcd.store import StoreUnavailable

DB = bytes(range(256)) * 400  # stands in for the bolt file


class Snapshot:
    """etcd's Maintenance.Snapshot: the database in chunks, then its sha256 as the last chunk."""

    def __init__(self, db: bytes = DB, chunk: int = 32 * 1024, trailer: bytes | None = None, fail_after: int = -1):
        self.db, self.chunk, self.fail_after = db, chunk, fail_after
        self.trailer = hashlib.sha256(db).digest() if trailer is None else trailer

    async def backup(self) -> AsyncIterator[bytes]:
        for i, at in enumerate(range(0, len(self.db), self.chunk)):
            if i == self.fail_after:
                raise StoreUnavailable("etcd went away")
            yield self.db[at:at + self.chunk]
        yield self.trailer


def at(second: int) -> dt.datetime:
    return dt.datetime(2027, 1, 2, 3, 4, second, 5000, tzinfo=dt.UTC)


async def test_a_backup_is_the_snapshot_with_its_sha256_beside_it(tmp_path: Path):
    b = await backup.take(Snapshot(), tmp_path, now=at(5))
    assert b.path == tmp_path / "hoststack-etcd-20270102T030405.005Z.db"
    data = DB + hashlib.sha256(DB).digest()
    assert b.path.read_bytes() == data and b.bytes == len(data)
    assert b.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / (b.path.name + ".sha256")).read_text() == f"{b.sha256}  {b.path.name}\n"
    assert b.path.stat().st_mode & 0o777 == 0o600
    assert backupfile.verify(b.path) == b.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == [b.path.name, b.path.name + ".sha256"]


@pytest.mark.parametrize("chunk", [1, 7, 31, 32, 33, 4096])
async def test_any_chunking_of_the_stream_gives_the_same_file(tmp_path: Path, chunk: int):
    b = await backup.take(Snapshot(chunk=chunk), tmp_path, now=at(5))
    assert b.path.read_bytes() == DB + hashlib.sha256(DB).digest()


@pytest.mark.parametrize("snapshot, cause", [
    (Snapshot(trailer=b"\0" * 32), "failed its own checksum"),
    (Snapshot(db=b"", trailer=b""), "failed its own checksum"),
    (Snapshot(fail_after=3), "etcd did not give its snapshot: etcd went away"),
])
async def test_a_failed_backup_leaves_no_file(tmp_path: Path, snapshot: Snapshot, cause: str):
    with pytest.raises(BackupFailed, match=cause):
        await backup.take(snapshot, tmp_path, now=at(5))
    assert list(tmp_path.iterdir()) == []


async def test_keep_amount_counts_backups_of_the_same_name_only(tmp_path: Path):
    (tmp_path / "pre-upgrade-20200101T000000.000Z.db").write_bytes(b"x")
    made = [await backup.take(Snapshot(), tmp_path, "daily", keep=3, now=at(s)) for s in range(5)]
    assert [len(b.removed) for b in made] == [0, 0, 0, 1, 1]
    assert backupfile.of_name(tmp_path, "daily") == [b.path for b in reversed(made[2:])]
    assert (tmp_path / "pre-upgrade-20200101T000000.000Z.db").exists()
    assert not (tmp_path / (made[0].path.name + ".sha256")).exists()


async def test_a_backup_of_the_same_name_being_written_is_not_disturbed(tmp_path: Path):
    part = backupfile.file_for(tmp_path, "x", at(5))
    part = part.with_name(part.name + ".part")
    part.write_bytes(b"someone else's")
    with pytest.raises(Busy):
        await backup.take(Snapshot(), tmp_path, "x", now=at(5))
    assert part.read_bytes() == b"someone else's"


@pytest.mark.parametrize("name", ["", "../x", "a/b", "x.db", "-x"])
def test_a_backup_name_is_a_file_name_prefix(name: str):
    with pytest.raises(InvalidBackup):
        backupfile.check_name(name)


async def test_record_failure_keeps_the_backup(tmp_path: Path):
    class Store(Snapshot):
        async def put(self, key: str, value: object, lease: int = 0) -> int:
            raise StoreUnavailable("etcd went away after the snapshot")

    b = await backup.take_and_record(Store(), tmp_path, "x", 2, timeout=10)  # type: ignore[arg-type]
    assert not b.recorded and b.path.exists()


async def test_a_backup_that_takes_too_long_is_abandoned(tmp_path: Path):
    class Slow(Snapshot):
        async def backup(self) -> AsyncIterator[bytes]:
            yield b"x"
            await asyncio.sleep(10)
            yield b"y"

    with pytest.raises(BackupFailed, match="more than 0.1 s"):
        await backup.take_and_record(Slow(), tmp_path, "x", 2, timeout=0.1)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


async def test_the_record_reads_back_and_a_foreign_value_is_no_record():
    from coordinator.domain import backups
    from coordinator.etcd.store import Entry

    class Store:
        value: object = None

        async def put(self, key: str, value: object, lease: int = 0) -> int:
            self.value = value
            return 1

        async def get(self, key: str) -> Entry | None:
            return Entry(key, self.value, 1, 1)

    store, rec = Store(), backups.BackupRecord(at=1.5, file="/b/x.db", sha256="ab" * 32, bytes=10, node="n1")
    await backups.record(store, rec)  # type: ignore[arg-type]
    assert store.value == {"at": 1.5, "file": "/b/x.db", "sha256": "ab" * 32, "bytes": 10, "node": "n1"}
    assert await backups.last(store) == rec  # type: ignore[arg-type]
    for junk in ({"at": 1.5}, {**store.value, "at": "yesterday"}, [1]):
        store.value = junk
        assert await backups.last(store) is None  # type: ignore[arg-type]
