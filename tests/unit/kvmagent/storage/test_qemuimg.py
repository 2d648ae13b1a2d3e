"""qemu-img is always told the formats; backing files are named relative to the overlay."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmagent.storage import qemuimg


def test_every_command_spells_out_the_formats():
    p = Path("/ps/volumes/v/f1.qcow2")
    assert qemuimg.create_argv(p, 10, "f0.qcow2", "qcow2") == [
        "qemu-img", "create", "-q", "-f", "qcow2", "-b", "f0.qcow2", "-F", "qcow2", str(p), "10"]
    assert qemuimg.rebase_argv(p, "../../images/i/image.raw", "raw")[-5:] == [
        "-b", "../../images/i/image.raw", "-F", "raw", str(p)]
    assert qemuimg.rebase_argv(p, None, None)[-3:] == ["-b", "", str(p)]
    assert qemuimg.info_argv(p, "raw")[:6] == ["qemu-img", "info", "-U", "-f", "raw", "--output=json"]
    assert qemuimg.convert_argv(p, Path("/x"))[4:8] == ["-f", "qcow2", "-O", "qcow2"]
    with pytest.raises(ValueError, match="format spelled out"):
        qemuimg.create_argv(p, 10, "f0.qcow2", None)


def test_an_image_made_from_a_volume_is_on_disk_before_its_checksum_is_written():
    """qemu-img convert writes its output with cache=unsafe (no flush at all) unless told otherwise."""
    argv = qemuimg.convert_argv(Path("/ps/volumes/v/f1.qcow2"), Path("/ps/exports/i.part"))
    assert argv[argv.index("-t") + 1] == "writeback"


def test_info_reads_format_size_and_backing():
    out = '{"format": "qcow2", "virtual-size": 1048576, "backing-filename": "f0.qcow2"}'
    assert qemuimg.parse_info(out) == qemuimg.Info("qcow2", 1 << 20, "f0.qcow2")
