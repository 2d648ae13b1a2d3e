"""file:// sources: the opened file itself is confined, so neither a symlink nor a swapped name reads elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cephagent.sources import SourceError, Sources


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Sources, Path, Path]:
    root, outside = tmp_path / "images", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    (root / "disk.raw").write_bytes(b"image")
    (outside / "shadow").write_bytes(b"secret")
    return Sources(None, [root], 60), root, outside  # type: ignore[arg-type] - file:// needs no HTTP session


def test_a_file_below_a_root_is_read_through_its_descriptor(tree):
    sources, root, _ = tree
    os.symlink(root / "disk.raw", root / "alias.raw")  # a symlink that stays inside is fine
    for name in ("disk.raw", "alias.raw"):
        with sources.opened(str(root / name)) as path:
            assert path.read_bytes() == b"image" and path.stat().st_size == 5


@pytest.mark.parametrize("make, words", [
    (lambda root, out: os.symlink(out / "shadow", root / "link.raw") or "link.raw", "is outside the directories"),
    (lambda root, out: os.symlink(out, root / "dir") or "dir/shadow", "is outside the directories"),
    (lambda root, out: "../secret/shadow", "is outside the directories"),
    (lambda root, out: "missing.raw", "no such file"),
    (lambda root, out: os.mkfifo(root / "fifo") or "fifo", "not a regular file"),
])
def test_what_resolves_outside_a_root_or_is_no_file_is_refused(tree, make, words):
    sources, root, outside = tree
    with pytest.raises(SourceError, match=words), sources.opened(f"{root}/{make(root, outside)}"):
        pass


def test_swapping_the_name_after_the_check_reads_the_checked_file(tree):
    sources, root, outside = tree
    with sources.opened(str(root / "disk.raw")) as path:
        os.replace(root / "disk.raw", root / "old.raw")
        os.symlink(outside / "shadow", root / "disk.raw")
        assert path.read_bytes() == b"image"
