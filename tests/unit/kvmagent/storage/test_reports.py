"""Reports only on change; moving figures alone at most once per quiet period."""

from __future__ import annotations

from kvmagent.storage.reports import Reports


def test_changes_are_sent_old_news_and_mere_figures_are_not():
    sent, now = [], [0.0]
    r = Reports(lambda kind, ident, body: sent.append(body), quiet=60, clock=lambda: now[0])
    assert r.send("storage", "a", {"state": "Ready", "capacity": {"used": 1}})
    assert not r.send("storage", "a", {"state": "Ready", "capacity": {"used": 1}})
    assert not r.send("storage", "a", {"state": "Ready", "capacity": {"used": 2}})
    assert r.send("storage", "a", {"state": "Unavailable", "capacity": None})  # a real change: at once
    now[0] = 61.0
    assert r.send("storage", "a", {"state": "Unavailable", "capacity": {"used": 3}})
    assert len(sent) == 3


def test_the_bodies_are_what_the_coordinator_accepts():
    from pathlib import Path

    from agentkit.model import PrimaryStorageSpec, StorageObserved, StoredVolumeSpec, VolumeObserved
    from kvmagent.storage.record import VolumeRecord
    from kvmagent.storage.reports import storage_body, volume_body
    from kvmagent.storage.volumes import Waiting

    ps = PrimaryStorageSpec(uuid="ps1", name="s", type="SharedMountPoint", url="/mnt/s")
    StorageObserved.model_validate(storage_body(ps, None, ["h1", "h2"], {"total": 10, "available": 5, "used": 1},
                                                {"img": 3}))
    StorageObserved.model_validate(storage_body(ps, "x" * 5000, [], None, {}))  # errors are cut to size
    spec = StoredVolumeSpec(uuid="v1", storage_uuid="ps1", size_bytes=1)
    rec = VolumeRecord(uuid="v1", storage_uuid="ps1", files={"f0": None}, active="f0", size_bytes=1,
                       snapshots={"s1": "f0"})
    export = {"image_uuid": "i1", "volume_uuid": "v1", "snapshot_uuid": None, "format": "qcow2", "sha256": "0" * 64,
              "size": 1, "virtual_size": 1, "path": "/mnt/s/exports/i1.qcow2"}
    for body in (volume_body(spec, rec, Path("/mnt/s/volumes/v1/f0.qcow2"), 4096, {"i1": export}, None),
                 volume_body(spec, Waiting("img", 7), None, 0, {}, None),
                 volume_body(spec, None, None, 0, {}, "no space"),
                 volume_body(spec.model_copy(update={"deleted": True}), None, None, 0, {}, None)):
        VolumeObserved.model_validate(body)
