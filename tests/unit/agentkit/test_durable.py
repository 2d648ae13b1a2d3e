"""agentkit.durable: a file replaced by `write_atomic` holds its old content or its new one, never a part."""

from __future__ import annotations

import errno
import os

import pytest

from agentkit import durable


def test_a_disk_that_fills_up_halfway_leaves_the_old_content(tmp_path, monkeypatch):
    path = tmp_path / "volume.json"
    durable.write_atomic(path, b'{"active": "f0"}')
    real_write = os.write
    calls = 0

    def nearly_full(fd: int, data: bytes) -> int:
        """As on a filesystem with a few bytes left: a short write, then ENOSPC."""
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, bytes(data[:5]))

    monkeypatch.setattr(durable.os, "write", nearly_full)
    with pytest.raises(OSError, match="No space"):
        durable.write_atomic(path, b'{"active": "f1", "files": {"f0": null, "f1": "f0"}}')
    assert path.read_bytes() == b'{"active": "f0"}'


def test_a_short_write_is_followed_by_the_rest(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(durable.os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))  # a signal, say
    durable.write_atomic(tmp_path / "acked", b"123456789")
    assert (tmp_path / "acked").read_bytes() == b"123456789"


def test_two_writers_of_one_file_on_a_shared_filesystem_each_rename_their_own(tmp_path, monkeypatch):
    """Hosts attaching a new shared storage at once write its marker at once: the second's rename must not find
    its temporary file moved away by the first's (nor the first publish the second's half-written one)."""
    path = tmp_path / ".hoststack-storage"
    real_replace = os.replace
    others = [b'{"uuid": "s1", "name": "nfs"}']

    def meanwhile(src: str, dst: str) -> None:
        if others:  # another host writes the same file between this one's write and its rename
            durable.write_atomic(path, others.pop())
        real_replace(src, dst)

    monkeypatch.setattr(durable.os, "replace", meanwhile)
    durable.write_atomic(path, b'{"uuid": "s1", "name": "nfs"}')
    assert path.read_bytes() == b'{"uuid": "s1", "name": "nfs"}'
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_failed_write_leaves_no_temporary_file_and_the_mode_is_exact(tmp_path, monkeypatch):
    path = tmp_path / "ca.pem"
    monkeypatch.setattr(durable.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError, match="I/O error"):
        durable.write_atomic(path, b"pem")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    old = os.umask(0o077)
    try:
        durable.write_atomic(path, b"pem", 0o644)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
