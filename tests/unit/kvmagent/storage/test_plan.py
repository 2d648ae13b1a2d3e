"""A volume's steps toward its spec: made once, snapshots and reverts in request order, deletions last."""

from __future__ import annotations

import pytest

from agentkit.model import ImageRef, Revert, SnapshotSpec, StoredVolumeSpec
from kvmagent.errors import StorageError
from kvmagent.storage.plan import CreateBase, Delete, DeleteSnapshot, Grow, TakeSnapshot, after, next_step
from kvmagent.storage.plan import Revert as RevertStep

IMAGE = ImageRef(uuid="img1", format="raw", sha256="0" * 64, size=4096)


def spec(**kw) -> StoredVolumeSpec:
    return StoredVolumeSpec(**{"uuid": "vol1", "storage_uuid": "ps1", "size_bytes": 1 << 20, **kw})


def converge(s: StoredVolumeSpec, record=None, image_size: int = 0):
    """Every step until none is left, and the final record."""
    steps = []
    while (step := next_step(s, record, image_size)) is not None:
        steps.append(step)
        record = after(s, record, step)
        assert len(steps) < 20
    return steps, record


def test_a_volume_over_its_image_is_made_once_and_never_smaller_than_the_image():
    steps, record = converge(spec(image=IMAGE), image_size=8 << 20)
    assert steps == [CreateBase("f0", 8 << 20, over_image=True)]
    assert record.files == {"f0": None} and record.active == "f0" and record.image_uuid == "img1"
    assert converge(spec(image=IMAGE), record) == ([], record)  # nothing twice


def test_snapshots_and_reverts_follow_the_request_order():
    _, record = converge(spec())
    s = spec(snapshots=[SnapshotSpec(uuid="s1", seq=1), SnapshotSpec(uuid="s2", seq=3)],
             revert=Revert(seq=2, snapshot_uuid="s1"))
    steps, record = converge(s, record)
    assert steps == [TakeSnapshot("s1", 1, "f0", "f1"), RevertStep(2, "s1", "f0", "f2", "f1"),
                     TakeSnapshot("s2", 3, "f2", "f3")]
    assert record.files == {"f0": None, "f2": "f0", "f3": "f2"} and record.active == "f3"
    assert record.snapshots == {"s1": "f0", "s2": "f2"} and record.revert_seq == 2


def test_deleting_a_snapshot_rebases_its_children_onto_its_parent():
    s = spec(snapshots=[SnapshotSpec(uuid="s1", seq=1), SnapshotSpec(uuid="s2", seq=2)])
    _, record = converge(s, converge(spec())[1])
    steps, record = converge(spec(snapshots=[SnapshotSpec(uuid="s2", seq=2)]), record)
    assert steps == [DeleteSnapshot("s1", "f0", ("f1",), None)]  # f1 over nothing (or the image) now
    assert record.files == {"f1": None, "f2": "f1"} and record.snapshots == {"s2": "f1"}
    steps, record = converge(spec(), record)
    assert steps == [DeleteSnapshot("s2", "f1", ("f2",), None)] and record.files == {"f2": None}


def test_a_revert_to_a_snapshot_that_does_not_exist_is_refused():
    _, record = converge(spec())
    with pytest.raises(StorageError, match="cannot revert to snapshot gone"):
        next_step(spec(revert=Revert(seq=1, snapshot_uuid="gone")), record)


def test_volumes_grow_never_shrink_and_are_deleted_explicitly():
    _, record = converge(spec())
    assert converge(spec(size_bytes=4 << 20), record)[0] == [Grow(4 << 20)]
    assert converge(spec(size_bytes=1 << 10), record)[0] == []
    assert converge(spec(deleted=True), record) == ([Delete()], None)
    assert converge(spec(deleted=True)) == ([], None)
