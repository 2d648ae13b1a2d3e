"""Following an import: what an agent's task report changes in the image record, and what is worth a write."""

from __future__ import annotations

from cephagent.wire import TaskInfo
from coordinator.domain import credentials
from coordinator.domain.ceph.imports import _apply, _milestone, new_record
from coordinator.domain.ceph.records import StorageRecord

from .standin import FSID, settings

BS = StorageRecord(uuid="b1", name="bs1", kind="bs", zone="default", fsid=FSID, mons=[], pools={"image": "imgs"},
                   created_at=0)


def task(state: str, **extra: object) -> TaskInfo:
    return TaskInfo.model_validate({"id": "t1", "kind": "image-import", "state": state,
                                    "progress": {"phase": "write", "done": 3, "total": 8}, **extra})


def test_a_new_import_shows_the_url_without_its_credentials():
    s, url = settings(8742), "http://user:pw@[fd00::1]:8080/a.qcow2?sig=x"
    rec = new_record(s, "u1", "img", BS, url, "auto")
    assert (rec.url, rec.pool, rec.rbd_image, rec.status, rec.phase) == (
        "http://[fd00::1]:8080/a.qcow2", "imgs", "img-u1", "Downloading", "queued")
    assert credentials.decrypt(s.secret_key, s.admin_token, rec.url_secret) == url


def test_progress_success_and_failure_are_recorded():
    rec = new_record(settings(8742), "u1", "img", BS, "file:///srv/a.raw", "raw")
    running = _apply(rec, task("running", percent=37.5))
    assert (running.status, running.phase, running.done, running.total, running.percent) == (
        "Downloading", "write", 3, 8, 37.5)
    done = _apply(rec, task("succeeded", result={"pool": "imgs", "name": "img-u1", "size": 8}))
    assert (done.status, done.percent, done.size, done.phase) == ("Ready", 100.0, 8, "done")
    failed = _apply(rec, task("failed", error={"code": "import_failed", "message": "HTTP 404"}))
    assert (failed.status, failed.reason) == ("Failed", "HTTP 404")


def test_only_milestones_are_written():
    rec = new_record(settings(8742), "u1", "img", BS, "file:///srv/a.raw", "raw")
    a, b = _apply(rec, task("running", percent=37.2)), _apply(rec, task("running", percent=37.9))
    assert _milestone(a) == _milestone(b) != _milestone(_apply(rec, task("running", percent=38.0)))
