"""Volumes on a real cluster: COW root volumes from an image, empty data volumes, resize, flatten,
snapshots, and the delete-order rules."""

from __future__ import annotations

import pytest
import rbd

from cephagent.cluster import CephCluster
from cephagent.errors import (
    AlreadyExists,
    HasDependants,
    ImageInUse,
    ImageNotFound,
    InvalidRequest,
    NotPermitted,
    SnapshotNotFound,
    SnapshotProtected,
)
from cephagent.volumes import Volumes
from cephagent.wire import CloneRequest, CreateVolumeRequest, ParentSpec, ResizeRequest, SnapshotRequest

pytestmark = pytest.mark.real
MiB = 1 << 20


def own_objects(cluster, pool: str, name: str) -> list[str]:
    """The RADOS data objects an image owns (a COW clone owns none until written)."""
    with cluster.ioctx(pool) as io:
        with rbd.Image(io, name, read_only=True) as image:
            prefix = image.block_name_prefix()
        return [o.key for o in io.list_objects() if o.key.startswith(prefix)]


def test_five_root_volumes_share_the_image_without_copying(cluster, volumes, pools, base_image, expected):
    images, vols = pools
    src = ParentSpec(pool=images, image=base_image.name)
    names = [f"hsroot{i}" for i in range(5)]
    clones = [volumes.clone(CloneRequest(pool=vols, name=n, source=src, size=128 * MiB)) for n in names]
    try:
        for c in clones:
            assert (c.parent, c.size, c.used) == (src, 128 * MiB, 0)
            assert own_objects(cluster, vols, c.name) == []
        parent = volumes.info(images, base_image.name)
        assert sorted(parent.snapshots[0].children) == [f"{vols}/{n}" for n in names]
        with volumes.open(vols, "hsroot3") as image:  # reads fall through to the image
            assert image.read(0, 4 * MiB) == expected(0, 4 * MiB)
            assert image.read(40 * MiB, 4 * MiB) == expected(40 * MiB, 4 * MiB)
            image.write(b"VM3", 0)
        with volumes.open(images, base_image.name, read_only=True) as image:  # copy-on-write: image unchanged
            image.set_snap("base")
            assert image.read(0, 3) == expected(0, 3)
        assert volumes.info(vols, "hsroot3").used == 4 * MiB  # one object copied up on write
        again = volumes.clone(CloneRequest(pool=vols, name="hsroot0", source=src, size=128 * MiB))
        assert again == clones[0]  # a retried clone is a no-op
        with pytest.raises(InvalidRequest, match="cannot be smaller than its 67108864 bytes"):
            volumes.clone(CloneRequest(pool=vols, name="hssmall", source=src, size=MiB))
        with pytest.raises(SnapshotNotFound, match=f"{images}/{base_image.name}@nosnap"):
            volumes.clone(CloneRequest(pool=vols, name="hsnosnap", source=ParentSpec(
                pool=images, image=base_image.name, snapshot="nosnap")))
    finally:
        for n in names:
            volumes.delete(vols, n)


def test_delete_order_rules_name_the_dependants(volumes, pools, base_image):
    images, vols = pools
    volumes.clone(CloneRequest(pool=vols, name="hsorder", source=ParentSpec(pool=images, image=base_image.name)))
    with pytest.raises(HasDependants, match=f"{images}/{base_image.name} has 1 clone.*{vols}/hsorder"):
        volumes.delete(images, base_image.name)
    with pytest.raises(HasDependants, match=f"{vols}/hsorder"):
        volumes.delete_snapshot(images, base_image.name, "base")

    volumes.create_snapshot(vols, "hsorder", SnapshotRequest(name="keep", protect=True))
    with pytest.raises(SnapshotProtected, match=f"{vols}/hsorder has protected snapshot.*keep"):
        volumes.delete(vols, "hsorder")
    child = CloneRequest(pool=vols, name="hsorder-child", source=ParentSpec(pool=vols, image="hsorder",
                                                                           snapshot="keep"))
    volumes.clone(child)
    with pytest.raises(HasDependants, match=f"{vols}/hsorder has 1 clone.*{vols}/hsorder-child") as e:
        volumes.delete(vols, "hsorder")
    assert e.value.status == 409 and e.value.code == "has_dependants"

    assert volumes.flatten(vols, "hsorder-child").parent is None
    assert volumes.delete_snapshot(vols, "hsorder", "keep")
    assert volumes.delete(vols, "hsorder")
    assert not volumes.delete(vols, "hsorder")
    assert volumes.delete(vols, "hsorder-child")
    assert volumes.info(images, base_image.name).snapshots[0].children == []


def test_flatten_copies_the_data_in_and_detaches(cluster, volumes, pools, base_image, expected):
    images, vols = pools
    volumes.clone(CloneRequest(pool=vols, name="hsflat", source=ParentSpec(pool=images, image=base_image.name)))
    try:
        flat = volumes.flatten(vols, "hsflat")
        assert flat.parent is None and flat.used == 8 * MiB  # the image's two data objects, now its own
        assert len(own_objects(cluster, vols, "hsflat")) == 2
        with volumes.open(vols, "hsflat") as image:
            assert image.read(40 * MiB, 4 * MiB) == expected(40 * MiB, 4 * MiB)
        assert volumes.info(images, base_image.name).snapshots[0].children == []
    finally:
        volumes.delete(vols, "hsflat")


def test_empty_volume_resize_snapshot_rollback(volumes, pools):
    vols = pools[1]
    v = volumes.create(CreateVolumeRequest(pool=vols, name="hsdata", size=16 * MiB))
    assert (v.size, v.used, v.parent, v.snapshots) == (16 * MiB, 0, None, [])
    assert volumes.create(CreateVolumeRequest(pool=vols, name="hsdata", size=16 * MiB)) == v
    with pytest.raises(AlreadyExists, match=f"{vols}/hsdata already exists"):
        volumes.create(CreateVolumeRequest(pool=vols, name="hsdata", size=32 * MiB))
    with volumes.open(vols, "hsdata") as image:
        image.write(b"one", 0)
    snap = volumes.create_snapshot(vols, "hsdata", SnapshotRequest(name="s1"))
    assert (snap.name, snap.protected, snap.size) == ("s1", False, 16 * MiB)
    with volumes.open(vols, "hsdata") as image:
        image.write(b"two", 0)
    volumes.rollback(vols, "hsdata", "s1")
    with volumes.open(vols, "hsdata") as image:
        assert image.read(0, 3) == b"one"

    assert volumes.resize(vols, "hsdata", ResizeRequest(size=32 * MiB)).size == 32 * MiB
    with pytest.raises(InvalidRequest, match="shrinking to 8388608 loses data") as e:
        volumes.resize(vols, "hsdata", ResizeRequest(size=8 * MiB))
    assert e.value.field == "size"
    assert volumes.resize(vols, "hsdata", ResizeRequest(size=8 * MiB, allow_shrink=True)).size == 8 * MiB
    assert volumes.delete(vols, "hsdata")  # its unprotected snapshot goes with it


def test_a_size_ceph_refuses_is_the_callers_error_and_leaves_nothing(volumes, pools, base_image):
    """1 PiB passes the models but not Ceph (an object map holds 256,000,000 objects): that was an rbd exception
    (500), and a clone grown to it stayed behind at the image's size, pinning the image for a record never kept."""
    images, vols = pools
    huge = 1 << 50
    refused = f"cannot be {huge} bytes: .*invalid argument.*at most 256,000,000 objects"
    with pytest.raises(InvalidRequest, match=refused) as e:
        volumes.create(CreateVolumeRequest(pool=vols, name="hshuge", size=huge))
    assert e.value.field == "size"
    with pytest.raises(ImageNotFound):
        volumes.info(vols, "hshuge")
    src = ParentSpec(pool=images, image=base_image.name)
    with pytest.raises(InvalidRequest, match=refused):
        volumes.clone(CloneRequest(pool=vols, name="hshuge", source=src, size=huge))
    with pytest.raises(ImageNotFound):
        volumes.info(vols, "hshuge")
    assert f"{vols}/hshuge" not in volumes.info(images, base_image.name).snapshots[0].children
    volumes.create(CreateVolumeRequest(pool=vols, name="hshuge", size=MiB))
    with pytest.raises(InvalidRequest, match=refused):
        volumes.resize(vols, "hshuge", ResizeRequest(size=huge))
    assert volumes.info(vols, "hshuge").size == MiB
    assert volumes.delete(vols, "hshuge")


def test_an_agent_user_without_the_caps_is_named(ceph, cluster, pools, tmp_path):
    """An operator's client_name with too few caps: librbd's permission error was a 500 'internal error'."""
    key = cluster.command("auth get-or-create", entity="client.hsweak",
                          caps=["mon", "profile rbd", "osd", "profile rbd-read-only"])[0]["key"]
    (tmp_path / "keyring").write_text(f"[client.hsweak]\n\tkey = {key}\n")
    weak = CephCluster(str(ceph.conf), "client.hsweak", str(tmp_path / "keyring"))
    weak.connect()
    try:
        with pytest.raises(NotPermitted, match=f"cephx user client.hsweak may not do this in pool '{pools[1]}' "
                           r"\(.*permission.*\); give it the caps docs/ceph.md names for client_name"):
            Volumes(weak).create(CreateVolumeRequest(pool=pools[1], name="hsweak", size=MiB))
    finally:
        weak.close()
        cluster.command("auth del", entity="client.hsweak")


def test_volume_open_by_a_client_is_not_deleted_rolled_back_or_shrunk(cluster, volumes, pools):
    vols = pools[1]
    volumes.create(CreateVolumeRequest(pool=vols, name="hsbusy", size=4 * MiB))
    volumes.create_snapshot(vols, "hsbusy", SnapshotRequest(name="s1"))
    with cluster.ioctx(vols) as io, rbd.Image(io, "hsbusy") as guest:  # what a running VM holds
        guest.write(b"guest data", 0)
        with pytest.raises(ImageInUse, match=f"{vols}/hsbusy is open by 127.0.0.1"):
            volumes.delete(vols, "hsbusy")
        with pytest.raises(ImageInUse, match=f"{vols}/hsbusy is open by 127.0.0.1"):  # not under the guest
            volumes.rollback(vols, "hsbusy", "s1")
        with pytest.raises(ImageInUse, match=f"{vols}/hsbusy is open by 127.0.0.1"):  # nor its data cut off
            volumes.resize(vols, "hsbusy", ResizeRequest(size=MiB, allow_shrink=True))
        assert volumes.resize(vols, "hsbusy", ResizeRequest(size=8 * MiB)).size == 8 * MiB  # growing is harmless
        assert (guest.size(), guest.read(0, 10)) == (8 * MiB, b"guest data")
    volumes.rollback(vols, "hsbusy", "s1")  # closed: now it may
    with volumes.open(vols, "hsbusy", read_only=True) as image:
        assert image.read(0, 10) == bytes(10)
    assert volumes.delete(vols, "hsbusy")
