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
