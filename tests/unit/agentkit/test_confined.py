"""file:// paths are opened only below an allowed root, one component at a time, no symlink followed."""

from __future__ import annotations

import os

import pytest

from agentkit.confined import Refused, open_beneath, resolve_roots


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "a/b").mkdir(parents=True)
    (root / "a/b/img").write_bytes(b"image")
    (tmp_path / "secret").write_bytes(b"secret")
    os.symlink(tmp_path / "secret", root / "link")
    os.symlink(root / "a/b/img", root / "inner-link")
    os.symlink(tmp_path, root / "a/out")
    os.mkfifo(root / "fifo")
    return tmp_path, resolve_roots([root])


def read(fd: int) -> bytes:
    try:
        return os.read(fd, 100)
    finally:
        os.close(fd)


def test_a_file_below_the_root_opens(tree):
    base, roots = tree
    assert read(open_beneath(roots, f"{base}/root/a/b/img")) == b"image"


@pytest.mark.parametrize(("path", "why"), [
    ("secret", "outside the directories"),
    ("root", "outside the directories"),
    ("root/a/../../secret", "without '..'"),
    ("root/link", "symlinks are not followed"),
    ("root/inner-link", "symlinks are not followed"),
    ("root/a/out/secret", "symlinks are not followed"),
    ("root/a/b/img/x", "not a plain path"),
    ("root/a/b", "not a regular file"),
    ("root/fifo", "not a regular file"),
    ("root/missing", "no such file"),
])
def test_everything_else_is_refused(tree, path, why):
    base, roots = tree
    with pytest.raises(Refused, match=why):
        open_beneath(roots, f"{base}/{path}")


def test_a_nul_byte_is_refused_not_an_error(tree):
    """A file:// URL's %00 reaches here unquoted; os.open would raise ValueError (a bug, so a crash)."""
    base, roots = tree
    with pytest.raises(Refused, match="cannot hold a NUL byte"):
        open_beneath(roots, f"{base}/root/a/b/img\0.raw")


def test_no_roots_no_files(tree):
    base, _ = tree
    with pytest.raises(Refused, match="none: file:// is disabled"):
        open_beneath([], f"{base}/root/a/b/img")
    with pytest.raises(Refused, match="absolute path"):
        open_beneath([base], "root/a/b/img")
