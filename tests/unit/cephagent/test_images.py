"""Image imports' temp files (no Ceph needed): what an interrupted import left goes at the next start."""

from __future__ import annotations

from cephagent.images import remove_leftovers


def test_the_temp_files_of_interrupted_imports_are_removed_and_nothing_else(tmp_path):
    for leftover in ("import-a1b2/download", "import-c3d4/converted.raw"):
        (tmp_path / leftover).parent.mkdir()
        (tmp_path / leftover).write_bytes(b"\1" * 4096)
    (tmp_path / "operator-notes").write_text("kept")
    remove_leftovers(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["operator-notes"]


def test_a_first_start_finds_no_tmp_dir_yet(tmp_path):
    remove_leftovers(tmp_path / "tmp")
    assert not (tmp_path / "tmp").exists()
