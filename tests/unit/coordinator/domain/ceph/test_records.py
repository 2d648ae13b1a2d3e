"""Ceph records: what earlier versions stored in camelCase still loads, new records are snake_case, and the
forms mons and volumes are shown and attached in."""

from __future__ import annotations

from agentkit.errors import NotFound
from cephagent.monurl import parse
from coordinator.domain import credentials
from coordinator.domain.ceph.errors import UnknownReference
from coordinator.domain.ceph.records import (
    MonRecord,
    StorageRecord,
    VolumeRecord,
    cluster_secret_uuid,
    missing,
)
from coordinator.domain.images.records import ImageRecord

from .standin import FSID, settings

LEGACY_STORAGE = {"uuid": "s1", "name": "ps1", "kind": "ps", "zone": "default", "fsid": FSID,
                  "pools": {"rootVolume": "r", "dataVolume": "d", "imageCache": "c"}, "cephUser": "hsvms",
                  "secretUuid": "sec", "createdAt": 1.5,
                  "mons": [{"host": "fd00::5", "monPort": 3300, "sshPort": 2222, "sshUsername": "root",
                            "sshPassword": "token"}]}
LEGACY_IMAGE = {"uuid": "i1", "name": "img", "backupStorageUuid": "b1", "fsid": FSID, "pool": "p",
                "rbdImage": "img-i1", "format": "qcow2", "url": "http://x/i", "status": "Downloading",
                "taskId": "t1", "taskHost": "10.0.0.1", "createdAt": 1, "updatedAt": 2, "urlSecret": "enc"}
LEGACY_VOLUME = {"uuid": "v1", "name": "vol", "primaryStorageUuid": "s1", "type": "Root", "imageUuid": "i1",
                 "pool": "r", "rbdImage": "vol-v1", "size": 4096, "fsid": FSID, "status": "Ready", "createdAt": 3,
                 "snapshots": [{"name": "s", "protected": True, "createdAt": 4}]}


def test_camel_case_records_load_and_are_written_back_in_snake_case():
    ps = StorageRecord.model_validate(LEGACY_STORAGE)
    assert (ps.ceph_user, ps.secret_uuid, ps.created_at, ps.mons[0].mon_port) == ("hsvms", "sec", 1.5, 3300)
    assert ps.model_dump()["mons"][0] == {"host": "fd00::5", "mon_port": 3300, "ssh_port": 2222,
                                          "ssh_username": "root", "ssh_password": "token"}
    assert StorageRecord.model_validate(ps.model_dump()) == ps
    image = ImageRecord.model_validate(LEGACY_IMAGE)
    assert (image.backup_storage_uuid, image.task_host, image.url_secret) == ("b1", "10.0.0.1", "enc")
    vol = VolumeRecord.model_validate(LEGACY_VOLUME)
    assert (vol.primary_storage_uuid, vol.image_uuid, vol.spec, vol.snapshots[0].created_at) == \
        ("s1", "i1", "r/vol-v1", 4.0)


def test_the_image_view_leaves_the_secret_url_out():
    view = ImageRecord.model_validate(LEGACY_IMAGE).view()
    assert "url_secret" not in view.model_dump() and view.rbd_image == "img-i1"


def test_mons_are_shown_redacted_and_matched_by_host_or_address():
    mon = StorageRecord.model_validate(LEGACY_STORAGE).mons[0]
    assert (mon.literal, mon.addr) == ("[fd00::5]", "[fd00::5]:3300")
    assert mon.redacted == "root:***@[fd00::5]:2222/?monPort=3300"
    assert all(mon.matches(r) for r in ("fd00::5", "[fd00::5]", "[fd00::5]:3300"))
    assert not mon.matches("[fd00::5]:6789") and not mon.matches("fd00::6")


def test_a_mon_keeps_its_ssh_password_encrypted():
    s = settings(8742)
    mon = MonRecord.of(parse("root:s3cret@10.0.0.1:22/?monPort=6790"), s)
    assert (mon.host, mon.mon_port, mon.ssh_port, mon.ssh_username) == ("10.0.0.1", 6790, 22, "root")
    assert "s3cret" not in mon.model_dump_json()
    assert credentials.decrypt(s.secret_key, mon.ssh_password) == "s3cret"


def test_a_volume_attaches_with_the_storages_monitors_and_cluster_secret():
    ps = StorageRecord.model_validate({**LEGACY_STORAGE, "cephUser": None, "secretUuid": None,
                                       "mons": LEGACY_STORAGE["mons"] * 2})
    disk = VolumeRecord.model_validate(LEGACY_VOLUME).rbd_disk(ps)
    assert (disk.pool, disk.image, disk.monitors, disk.user, disk.fsid) == \
        ("r", "vol-v1", ["[fd00::5]:3300", "[fd00::5]:3300"], "admin", FSID)
    assert disk.secret_uuid == cluster_secret_uuid(FSID) == cluster_secret_uuid(FSID)
    assert cluster_secret_uuid(FSID) != cluster_secret_uuid("another")
    assert ps.hosts == ["fd00::5"] and ps.title == "Ceph primary storage ps1"


def test_a_missing_reference_is_404_in_the_path_and_400_in_a_body():
    path = missing("volume", "v9", None)
    assert isinstance(path, NotFound) and (path.status, path.code, path.message) == (
        404, "not_found", "volume v9 does not exist")
    body = missing("image", "i9", "image_uuid")
    assert isinstance(body, UnknownReference) and (body.status, body.code, body.message, body.field) == (
        400, "not_found", "image i9 does not exist", "image_uuid")
