"""Images made from volumes: what an interrupted copy leaves goes with the export the spec no longer lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkit.model import ExportSpec, SnapshotSpec, StoredVolumeSpec
from kvmagent.storage import exports
from kvmagent.storage.exports import Exports
from kvmagent.storage.layout import Layout
from kvmagent.storage.record import VolumeRecord


class Killed(BaseException):
    """The agent killed while qemu-img copies (nothing in it handles this)."""


SPEC = StoredVolumeSpec(uuid="v1", storage_uuid="s1", size_bytes=1 << 20, snapshots=[SnapshotSpec(uuid="s1", seq=1)])
RECORD = VolumeRecord(uuid="v1", storage_uuid="s1", files={"f0": None, "f1": "f0"}, active="f1",
                      snapshots={"s1": "f0"}, size_bytes=1 << 20, next_file=2)


class NoHolders:
    async def holder(self, folder: Path) -> None:
        return None


async def test_an_export_copy_cut_short_goes_once_the_spec_no_longer_lists_it(tmp_path, monkeypatch):
    """Killed while `qemu-img convert` wrote an export, and the export dropped before the agent came back (its
    image deleted): the part written is removed with the volume's other exports the spec no longer lists."""
    async def cut_short(src: Path, dst: Path) -> None:
        dst.write_bytes(b"QFI\xfb")
        raise Killed()

    monkeypatch.setattr(exports.qemuimg, "convert", cut_short)
    made = Exports(Layout(tmp_path), NoHolders())
    for volume, image in (("v1", "i1"), ("v2", "i2")):
        with pytest.raises(Killed):
            await made.make(SPEC.model_copy(update={"uuid": volume}), RECORD.model_copy(update={"uuid": volume}),
                            ExportSpec(image_uuid=image, snapshot_uuid="s1"))
    made.prune("v1", set())
    assert [p.name for p in (tmp_path / "exports").iterdir()] == ["i2.v2.part"]  # another volume's, going on


async def test_an_unreadable_record_of_an_export_is_made_again_not_a_crash_at_every_pass(tmp_path, monkeypatch, caplog):
    """A damaged `<image>.json` beside an export (a disk error, a hand edit) raised ValueError out of the storage
    pass: the agent, restarted, died there again. The export is made again instead, and the log names the file."""
    async def convert(src: Path, dst: Path) -> None:
        dst.write_bytes(b"QFI\xfb-the-copy")

    async def info(path: Path, fmt: str) -> exports.qemuimg.Info:
        return exports.qemuimg.Info("qcow2", 1 << 20, None)

    monkeypatch.setattr(exports.qemuimg, "convert", convert)
    monkeypatch.setattr(exports.qemuimg, "info", info)
    made = Exports(Layout(tmp_path), NoHolders())
    made.sidecar("i1").parent.mkdir()
    made.sidecar("i1").write_bytes(b'{"image_uuid": "i1", "sha')
    meta = await made.make(SPEC, RECORD, ExportSpec(image_uuid="i1", snapshot_uuid="s1"))
    assert meta["sha256"] == exports.sha256_of(made.layout.export_file("i1")) and made.done("i1") == meta
    assert str(made.sidecar("i1")) in caplog.text
