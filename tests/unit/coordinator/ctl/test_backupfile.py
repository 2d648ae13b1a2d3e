"""Backup files are verified before a restore touches anything: checksum file, content, etcd's own hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from coordinator.ctl import backupfile
from coordinator.ctl.errors import InvalidBackup

DB = b"bolt database" * 1000


def write(path: Path, data: bytes, recorded: str | None = None) -> Path:
    path.write_bytes(data)
    path.with_name(path.name + ".sha256").write_text(f"{recorded or hashlib.sha256(data).hexdigest()}  {path.name}\n")
    return path


def test_a_good_backup_verifies(tmp_path: Path):
    data = DB + hashlib.sha256(DB).digest()
    assert backupfile.verify(write(tmp_path / "b.db", data)) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "no such backup file"),
    (lambda p: p.mkdir(), "a directory, not a backup file"),  # said 'no such backup file'
    (lambda p: p.write_bytes(DB), r"cannot read its checksum file b.db.sha256 \(No such file or directory\)"),
    (lambda p: (p.write_bytes(DB), p.with_name("b.db.sha256").write_text("")), "its checksum file b.db.sha256 is "
     "empty"),  # said '(list index out of range)'
    (lambda p: write(p, DB + hashlib.sha256(DB).digest(), "0" * 64), "checksum mismatch: b.db.sha256 says 0000"),
    (lambda p: write(p, DB + b"\0" * 32), "not an etcd snapshot"),
    (lambda p: write(p, b"tiny"), "not an etcd snapshot"),
])
def test_a_bad_backup_is_refused_saying_why(tmp_path: Path, setup, message: str):  # noqa: ANN001
    path = tmp_path / "b.db"
    setup(path)
    with pytest.raises(InvalidBackup, match=message):
        backupfile.verify(path)
