"""RBD volumes: copy-on-write clones of image snapshots, empty volumes, resize, flatten, snapshots, delete.

The delete rules keep the clone graph intact: a volume (or snapshot) that clones depend on is never
removed, and the error names the dependants; a volume whose snapshots are protected is refused too.
Unprotected snapshots are internal to their volume and go with it. Creating an existing volume again
with the same parameters returns it unchanged, so retried requests are harmless.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import rbd

from cephagent.cluster import CephCluster, unavailable_on_timeout
from cephagent.errors import (
    AlreadyExists,
    HasDependants,
    ImageInUse,
    ImageNotFound,
    InvalidRequest,
    SnapshotNotFound,
    SnapshotProtected,
)
from cephagent.wire import (
    CloneRequest,
    CreateVolumeRequest,
    ParentSpec,
    ResizeRequest,
    SnapshotInfo,
    SnapshotRequest,
    VolumeInfo,
)

log = logging.getLogger(__name__)


def spec(pool: str, name: str, snap: str | None = None) -> str:
    return f"{pool}/{name}" + (f"@{snap}" if snap else "")


class Volumes:
    def __init__(self, cluster: CephCluster):
        self.cluster = cluster
        self.rbd = rbd.RBD()

    @contextlib.contextmanager
    def open(self, pool: str, name: str, read_only: bool = False) -> Iterator[rbd.Image]:
        """An open image; ImageNotFound names `pool/name`. Read-only opens do not count as watchers."""
        with self.cluster.ioctx(pool) as io:
            try:
                image = rbd.Image(io, name, read_only=read_only)
            except rbd.ImageNotFound:
                raise ImageNotFound(spec=spec(pool, name)) from None
            with image:
                yield image

    def info(self, pool: str, name: str) -> VolumeInfo:
        with self.open(pool, name, read_only=True) as image:
            return self._describe(pool, name, image)

    def _describe(self, pool: str, name: str, image: rbd.Image) -> VolumeInfo:
        used: list[int] = []
        size = image.size()
        image.diff_iterate(0, size, None, lambda _o, length, exists: used.append(length if exists else 0),
                           include_parent=False, whole_object=True)
        return VolumeInfo(pool=pool, name=name, size=size, used=sum(used), parent=parent_of(image),
                          snapshots=snapshots_of(image))

    def create(self, req: CreateVolumeRequest) -> VolumeInfo:
        """An empty (thin) volume with the cluster's default RBD features."""
        with self.cluster.ioctx(req.pool) as io:
            try:
                self.rbd.create(io, req.name, req.size, old_format=False)
            except rbd.ImageExists:
                pass
            except rbd.InvalidArgument as e:
                raise refused_size(spec(req.pool, req.name), req.size, e) from e
        info = self.info(req.pool, req.name)
        if info.size != req.size or info.parent is not None:
            raise AlreadyExists(field="name", spec=spec(req.pool, req.name),
                                detail=f" (size {info.size}, parent {info.parent and info.parent.spec})")
        return info

    def clone(self, req: CloneRequest) -> VolumeInfo:
        """A copy-on-write clone of `source` (no data is copied), grown to `size` if that is larger."""
        src = req.source
        with self.open(src.pool, src.image, read_only=True) as parent:
            sizes = {s["name"]: s["size"] for s in parent.list_snaps()}
        if src.snapshot not in sizes:
            raise SnapshotNotFound(field="source", spec=src.spec)
        if req.size and req.size < sizes[src.snapshot]:
            raise InvalidRequest(field="size", message=f"a clone of {src.spec} cannot be smaller than its "
                                 f"{sizes[src.snapshot]} bytes")
        created = True
        with self.cluster.ioctx(src.pool, field="source.pool") as src_io, self.cluster.ioctx(req.pool) as dst_io:
            try:
                self.rbd.clone(src_io, src.image, src.snapshot, dst_io, req.name)
            except rbd.ImageExists:
                created = False
            except rbd.ImageNotFound:  # removed meanwhile
                raise SnapshotNotFound(field="source", spec=src.spec) from None
            except rbd.InvalidArgument as e:
                raise InvalidRequest(field="source", message=f"cannot clone {src.spec}: {e} (is it protected?)") \
                    from e
        try:
            with self.open(req.pool, req.name) as image:
                info = self._describe(req.pool, req.name, image)
                if info.parent != src:
                    raise AlreadyExists(field="name", spec=spec(req.pool, req.name),
                                        detail=f" with parent {info.parent and info.parent.spec}, not {src.spec}")
                if req.size and req.size > info.size:
                    set_size(image, spec(req.pool, req.name), req.size)
                    info = self._describe(req.pool, req.name, image)
        except InvalidRequest:
            if created:  # leave no clone that no one asked for: it would pin its image
                self.delete(req.pool, req.name)
            raise
        log.info("cloned", extra={"fields": {"source": src.spec, "volume": spec(req.pool, req.name)}})
        return info

    def resize(self, pool: str, name: str, req: ResizeRequest) -> VolumeInfo:
        """Growing is harmless to a running guest; shrinking is refused while a client (a running VM) has the image
        open, as a rollback is: the guest's data past the new end would go under it. Checked on a read-only open."""
        with self.open(pool, name, read_only=True) as image:
            if req.size < image.size():
                if not req.allow_shrink:
                    raise InvalidRequest(field="size", message=f"{spec(pool, name)} is {image.size()} bytes; "
                                         f"shrinking to {req.size} loses data: set allow_shrink to do it anyway")
                check_unwatched(pool, name, image)
        with self.open(pool, name) as image:
            set_size(image, spec(pool, name), req.size)
            return self._describe(pool, name, image)

    def flatten(self, pool: str, name: str) -> VolumeInfo:
        """Copy the parent's data in, so the volume no longer depends on its image (takes as long as that copy)."""
        with self.open(pool, name) as image:
            if parent_of(image) is not None:
                image.flatten()
            return self._describe(pool, name, image)

    def create_snapshot(self, pool: str, name: str, req: SnapshotRequest) -> SnapshotInfo:
        with self.open(pool, name) as image:
            if not image.snap_exists(req.name):
                image.create_snap(req.name)
            if req.protect and not image.is_protected_snap(req.name):
                image.protect_snap(req.name)
            return next(s for s in snapshots_of(image) if s.name == req.name)

    def rollback(self, pool: str, name: str, snap: str) -> VolumeInfo:
        """Refused while a client (a running VM) has the image open: the rollback would rewrite its disk under
        the guest. Checked on a read-only open, which is no watcher itself (ours would be one)."""
        with self.open(pool, name, read_only=True) as image:
            if not image.snap_exists(snap):
                raise SnapshotNotFound(spec=spec(pool, name, snap))
            check_unwatched(pool, name, image)
        with self.open(pool, name) as image:
            image.rollback_to_snap(snap)
            return self._describe(pool, name, image)

    def delete_snapshot(self, pool: str, name: str, snap: str) -> bool:
        """Remove a snapshot (unprotecting it first) unless clones depend on it; False if it was absent."""
        with self.open(pool, name) as image:
            if not image.snap_exists(snap):
                return False
            children = children_of(image, snap)
            if children:
                raise HasDependants(spec=spec(pool, name, snap), count=len(children), dependants=", ".join(children))
            if image.is_protected_snap(snap):
                image.unprotect_snap(snap)
            image.remove_snap(snap)
            return True

    def delete(self, pool: str, name: str) -> bool:
        """Remove a volume and its unprotected snapshots; False if it was absent."""
        try:
            with self.open(pool, name, read_only=True) as image:
                check_deletable(pool, name, image)
                has_snaps = bool(list(image.list_snaps()))
            if has_snaps:
                with self.open(pool, name) as image:
                    for s in image.list_snaps():
                        image.remove_snap(s["name"])
        except ImageNotFound:
            return False
        with self.cluster.ioctx(pool) as io:
            try:
                self.rbd.remove(io, name)
            except rbd.ImageNotFound:
                return False
            except rbd.ImageBusy:
                raise ImageInUse(spec=spec(pool, name), watchers="another client") from None
        log.info("deleted volume", extra={"fields": {"volume": spec(pool, name)}})
        return True


def refused_size(name: str, size: int, e: rbd.Error) -> InvalidRequest:
    """Ceph's EINVAL for a size our models let through: more objects than an object map holds."""
    return InvalidRequest(field="size", message=f"{name} cannot be {size} bytes: {e} (with object-map an RBD image "
                          "has at most 256,000,000 objects: 976 TiB at 4 MiB each)")


def set_size(image: rbd.Image, name: str, size: int) -> None:
    try:
        image.resize(size)
    except rbd.InvalidArgument as e:
        raise refused_size(name, size, e) from e


def check_deletable(pool: str, name: str, image: rbd.Image) -> None:
    """Refuse (naming them) while clones depend on any snapshot, while snapshots are protected, or while
    a client (a running VM) has the image open."""
    snaps = [s["name"] for s in image.list_snaps()]
    children = [c for s in snaps for c in children_of(image, s)]
    if children:
        raise HasDependants(spec=spec(pool, name), count=len(children), dependants=", ".join(children))
    protected = [s for s in snaps if image.is_protected_snap(s)]
    if protected:
        raise SnapshotProtected(spec=spec(pool, name), snapshots=", ".join(protected))
    check_unwatched(pool, name, image)


def check_unwatched(pool: str, name: str, image: rbd.Image) -> None:
    """Refuse (naming their addresses) while clients have the image open: a running VM does."""
    watchers = [w["addr"] for w in image.watchers_list()]
    if watchers:
        raise ImageInUse(spec=spec(pool, name), watchers=", ".join(watchers))


def children_of(image: rbd.Image, snap: str) -> list[str]:
    """Clones of one snapshot as `pool/image` (a clone in the trash still depends on it)."""
    with unavailable_on_timeout():
        image.set_snap(snap)
        try:
            kids = list(image.list_children2())
        finally:
            image.set_snap(None)
    return [spec(k["pool"], k["image"]) + (" (in trash)" if k.get("trash") else "") for k in kids]


def snapshots_of(image: rbd.Image) -> list[SnapshotInfo]:
    return [SnapshotInfo(name=s["name"], size=s["size"], protected=image.is_protected_snap(s["name"]),
                         children=children_of(image, s["name"])) for s in image.list_snaps()]


def parent_of(image: rbd.Image) -> ParentSpec | None:
    try:
        p = image.get_parent_image_spec()
    except rbd.ImageNotFound:
        return None
    return ParentSpec(pool=p["pool_name"], image=p["image_name"], snapshot=p["snap_name"])
