"""Every path is confined to its storage directory: `..`, absolute paths elsewhere and symlinks out refused."""

from __future__ import annotations

import pytest

from kvmagent.errors import PathEscapes
from kvmagent.storage.layout import Layout, confine


def test_paths_inside_the_root_resolve(tmp_path):
    root = tmp_path / "ps"
    assert confine(root, "vols/a.qcow2") == root / "vols/a.qcow2"
    assert confine(root, root / "b.qcow2") == root / "b.qcow2"
    assert confine(root, "x/../y.qcow2") == root / "y.qcow2"


@pytest.mark.parametrize("path", ["../../etc/shadow", "/etc/shadow", "..", ".", "", "a/../../b"])
def test_paths_that_leave_the_root_are_refused(tmp_path, path):
    with pytest.raises(PathEscapes, match="outside"):
        confine(tmp_path / "ps", path)


def test_a_symlink_out_of_the_root_is_refused_and_a_root_that_is_a_symlink_is_fine(tmp_path):
    real = tmp_path / "real"
    (real / "vols").mkdir(parents=True)
    (real / "vols" / "out").symlink_to("/etc")
    with pytest.raises(PathEscapes):
        confine(real, "vols/out/shadow")
    (tmp_path / "link").symlink_to(real)
    assert confine(tmp_path / "link", "vols/a.qcow2") == real / "vols/a.qcow2"


def test_the_layout_names_files_by_ids_relative_backing_included(tmp_path):
    lay = Layout(tmp_path)
    assert lay.volume_file("v1", "f0") == tmp_path / "volumes/v1/f0.qcow2"
    assert lay.image_file("img", "raw") == tmp_path / "images/img/image.raw"
    assert lay.partial("img", "h1") == tmp_path / "images/.partial/img.h1.part"
    assert (lay.volume_dir("v1") / Layout.backing_name("raw", "img")).resolve() == lay.image_file("img", "raw")
    with pytest.raises(PathEscapes):
        lay.volume_dir("..")
