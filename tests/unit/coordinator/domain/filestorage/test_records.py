"""How file-based storage and volumes render into the hosts' streams."""

from __future__ import annotations

from agentkit.model import ImageRef, StoredVolumeSpec
from coordinator.domain.filestorage.records import FileSnapshotRecord, FileStorageRecord, FileVolumeRecord
from coordinator.domain.filestorage.vmdisks import Planned, Wanted

IMAGE = ImageRef(uuid="img", format="raw", sha256="0" * 64, size=1)


def storage(**kw) -> FileStorageRecord:
    return FileStorageRecord(**{"uuid": "ps1", "name": "s", "type": "LocalStorage", "url": "/ps", "created_at": 0,
                                **kw})


def test_a_storage_goes_to_every_host_or_to_the_hosts_it_is_attached_to():
    assert storage().stream_keys() == ["/hs/d/all/storage/ps1"]
    assert storage(host_uuids=["h1", "h2"]).stream_keys() == ["/hs/d/host/h1/storage/ps1", "/hs/d/host/h2/storage/ps1"]
    assert storage().scope("h1") == "h1" and storage(type="SharedMountPoint").scope("h1") == "shared"
    assert storage(host_uuids=["h1"]).attached("h1") and not storage(host_uuids=["h1"]).attached("h2")


def test_a_volume_renders_its_snapshots_revert_and_tombstone_for_its_host():
    vol = FileVolumeRecord(uuid="v1", name="v", primary_storage_uuid="ps1", type="Root", host_uuid="h1", size=10,
                           image=IMAGE, snapshots=[FileSnapshotRecord(name="a", uuid="s1", seq=1, created_at=0)],
                           seq=1, created_at=0)
    assert vol.stream_key == "/hs/d/host/h1/volume/v1"
    spec = vol.spec()
    assert isinstance(spec, StoredVolumeSpec) and spec.image == IMAGE and [s.uuid for s in spec.snapshots] == ["s1"]
    assert vol.spec(deleted=True).deleted and vol.volume_disk().storage_uuid == "ps1"


def test_a_vm_create_asks_storage_only_for_what_it_makes_there():
    assert not Wanted("vm").any and Wanted("vm", data_disks=[1]).any and Wanted("vm", iso_uuid="i").any
    recs = [FileVolumeRecord(uuid=u, name=u, primary_storage_uuid="ps1", type=t, host_uuid="h1", size=5,
                             created_at=0) for u, t in (("r", "Root"), ("d", "Data"))]
    planned = Planned("h1", None, recs, None)  # type: ignore[arg-type]
    assert [(v.uuid, v.role, v.device_index) for v in planned.volumes()] == [("r", "root", 0), ("d", "data", 1)]
    assert planned.need == 10
