"""Volume steps: a storage whose filesystem fails is an expected failure of that volume, not a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkit.model import StoredVolumeSpec
from agentkit.supervise import Supervisor
from kvmagent.errors import StorageError
from kvmagent.storage.imagecache import ImageCache
from kvmagent.storage.layout import Layout
from kvmagent.storage.record import VolumeRecord, save
from kvmagent.storage.volumes import VolumeWorker


class NoHolders:
    """No running VM holds any volume (no libvirt)."""

    async def holder(self, folder: Path) -> None:
        return None


async def never(*args):
    raise AssertionError("no download expected")


def worker(root: Path) -> VolumeWorker:
    layout = Layout(root)
    return VolumeWorker(layout, ImageCache(layout, "h1", never, Supervisor(), lambda: None), NoHolders())


async def test_a_volume_whose_lock_cannot_be_made_fails_with_a_storage_error(tmp_path):
    (tmp_path / "locks").write_text("a file where the locks' directory should be")
    with pytest.raises(StorageError, match=r"volume v1: \[Errno 17\] File exists"):
        await worker(tmp_path).converge(StoredVolumeSpec(uuid="v1", storage_uuid="s1", size_bytes=1 << 20))


async def test_a_delete_the_filesystem_refuses_fails_with_a_storage_error_and_keeps_the_volume(tmp_path):
    volumes = worker(tmp_path)
    record = VolumeRecord(uuid="v1", storage_uuid="s1", files={"f1": None}, active="f1", size_bytes=1 << 20)
    volumes.layout.volume_dir("v1").mkdir(parents=True)
    save(volumes.layout.record("v1"), record)
    (tmp_path / ".trash").write_text("a file where the trash directory should be")
    spec = StoredVolumeSpec(uuid="v1", storage_uuid="s1", size_bytes=1 << 20, deleted=True)
    with pytest.raises(StorageError, match="volume v1: .*File exists"):
        await volumes.converge(spec)
    assert volumes.layout.record("v1").exists()  # retried as after a crash: the record names complete files


async def test_a_volume_deleted_after_its_create_was_cut_short_leaves_nothing(tmp_path):
    """Killed while qemu-img made the volume's first file (no record yet), then the volume deleted: its
    directory goes, where no step was planned for a volume without a record and the part stayed for good."""
    volumes = worker(tmp_path)
    volumes.layout.volume_dir("v1").mkdir(parents=True)
    volumes.layout.volume_file("v1", "f0").write_bytes(b"QFI\xfb")
    spec = StoredVolumeSpec(uuid="v1", storage_uuid="s1", size_bytes=1 << 20, deleted=True)
    assert await volumes.converge(spec) is None
    assert list(volumes.layout.volumes.iterdir()) == []
