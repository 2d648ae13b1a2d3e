"""A shared mount point is usable when it is a mount point or carries its storage's marker."""

from __future__ import annotations

import json

import pytest

from agentkit.model import PrimaryStorageSpec
from kvmagent.errors import StorageUnavailable
from kvmagent.storage.mounts import beat, check_shared, ensure_local, mount_points, peers

MOUNTINFO = """22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
98 22 0:45 / /mnt/with\\040space rw shared:50 - tmpfs tmpfs rw
99 22 254:0 /srv/smp /mnt/smp rw shared:1 - ext4 /dev/vda rw
"""


def smp(path, uuid="ps1") -> PrimaryStorageSpec:
    return PrimaryStorageSpec(uuid=uuid, name="smp", type="SharedMountPoint", url=str(path))


def test_mount_points_are_read_from_mountinfo_bind_mounts_and_escapes_included():
    assert mount_points(MOUNTINFO) == {"/", "/mnt/with space", "/mnt/smp"}


def test_a_mount_point_gets_the_marker_and_a_plain_directory_is_reported_with_host_and_path(tmp_path):
    spec = smp(tmp_path)
    with pytest.raises(StorageUnavailable) as e:
        check_shared(spec, "kvm2", "")
    assert str(tmp_path) in str(e.value) and "host kvm2" in str(e.value) and "not mounted" in str(e.value)
    assert not (tmp_path / ".hoststack-storage").exists()  # nothing written on the host's own disk
    check_shared(spec, "kvm1", f"1 0 0:1 / {tmp_path} rw - tmpfs tmpfs rw\n")
    assert json.loads((tmp_path / ".hoststack-storage").read_text())["uuid"] == "ps1"
    check_shared(spec, "kvm2", "")  # a directory inside the shared filesystem: the marker proves it


def test_a_marker_of_another_storage_is_taken_over_where_mounted_and_refused_elsewhere(tmp_path):
    (tmp_path / ".hoststack-storage").write_text('{"uuid": "other"}')  # left by a deleted storage
    with pytest.raises(StorageUnavailable, match="holds primary storage other"):
        check_shared(smp(tmp_path), "kvm2", "")
    check_shared(smp(tmp_path), "kvm1", f"1 0 0:1 / {tmp_path} rw - tmpfs tmpfs rw\n")
    assert json.loads((tmp_path / ".hoststack-storage").read_text())["uuid"] == "ps1"
    check_shared(smp(tmp_path), "kvm2", "")


def test_an_unreadable_marker_is_written_again_where_mounted_and_refused_elsewhere(tmp_path):
    """A damaged marker (a disk error, a hand edit) made the storage unusable on every host for good; where the
    path is mounted, being mounted is the proof."""
    (tmp_path / ".hoststack-storage").write_text("")
    with pytest.raises(StorageUnavailable, match="unreadable marker .*hoststack-storage"):
        check_shared(smp(tmp_path), "kvm2", "")
    check_shared(smp(tmp_path), "kvm1", f"1 0 0:1 / {tmp_path} rw - tmpfs tmpfs rw\n")
    assert json.loads((tmp_path / ".hoststack-storage").read_text())["uuid"] == "ps1"
    check_shared(smp(tmp_path), "kvm2", "")


def test_heartbeats_show_which_hosts_share_the_filesystem(tmp_path):
    beat(smp(tmp_path), "h1", "kvm1", now=100.0)
    beat(smp(tmp_path), "h2", "kvm2", now=80.0)
    beat(smp(tmp_path), "h3", "kvm3", now=125.0)  # its clock a little ahead of this host's
    beat(smp(tmp_path), "h4", "kvm4", now=32503680000.0)  # stamped in the year 3000: not a peer for ever
    assert peers(smp(tmp_path), 30, now=105.0) == ["h1", "h2", "h3"]
    assert peers(smp(tmp_path), 30, now=111.0) == ["h1", "h3"]
    beating = next(tmp_path.rglob("h1")).with_name(".h5.0123456789ab.tmp")  # another host writing its beat now
    beating.write_text('{"host": "h5", "at": 110.0}')
    assert peers(smp(tmp_path), 30, now=111.0) == ["h1", "h3"]


def test_local_storage_is_made_when_missing(tmp_path):
    ensure_local(PrimaryStorageSpec(uuid="ls", name="ls", type="LocalStorage", url=str(tmp_path / "a/b")), "kvm1")
    assert (tmp_path / "a/b").is_dir()
