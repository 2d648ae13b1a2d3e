"""A volume's next step toward its desired state, and its record once that step is done (pure).

Level-triggered: `next_step(spec, record)` compares what is desired with what the record says and names
one step; the executor does it, saves `after(...)`, and asks again until there is nothing to do. Requests
that must happen in order (snapshots and reverts) carry the volume's request sequence and are done in
that order; a snapshot missing from the spec is deleted after them. Every step keeps the data a user
can reach: deleting a snapshot merges its data into the files that depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentkit.model import StoredVolumeSpec
from kvmagent.errors import StorageError
from kvmagent.storage.record import VolumeRecord


@dataclass(frozen=True)
class CreateBase:
    """The volume's first file: blank, or an overlay on the cached image (`over_image`)."""

    file_id: str
    size: int
    over_image: bool


@dataclass(frozen=True)
class TakeSnapshot:
    """Freeze the active file as the snapshot; a new active file on top of it."""

    snapshot_uuid: str
    seq: int
    frozen: str
    new_active: str


@dataclass(frozen=True)
class Revert:
    """A new active file on top of the snapshot's file; the old active file is discarded."""

    seq: int
    snapshot_uuid: str
    onto: str
    new_active: str
    discard: str


@dataclass(frozen=True)
class DeleteSnapshot:
    """Rebase the snapshot file's children onto its parent (None: the image, or nothing), then remove it."""

    snapshot_uuid: str
    file_id: str
    children: tuple[str, ...]
    onto: str | None


@dataclass(frozen=True)
class Grow:
    size: int


@dataclass(frozen=True)
class Delete:
    pass


Step = CreateBase | TakeSnapshot | Revert | DeleteSnapshot | Grow | Delete


def next_step(spec: StoredVolumeSpec, record: VolumeRecord | None, image_size: int = 0) -> Step | None:
    """The one step that brings `record` closer to `spec` (None: nothing to do). `image_size` is the
    cached image's virtual size (a volume over it is never smaller)."""
    if spec.deleted:
        return Delete() if record is not None else None
    if record is None:
        return CreateBase("f0", max(spec.size_bytes, image_size), spec.image is not None)
    requests = [(s.seq, s.uuid) for s in spec.snapshots if s.uuid not in record.snapshots]
    if spec.revert is not None and spec.revert.seq > record.revert_seq:
        requests.append((spec.revert.seq, ""))  # "": the revert
    if requests:
        seq, snapshot = min(requests)
        if snapshot:
            return TakeSnapshot(snapshot, seq, record.active, record.new_file_id())
        return _revert(spec, record, seq, spec.revert.snapshot_uuid if spec.revert else "")
    wanted = {s.uuid for s in spec.snapshots}
    for gone in sorted(set(record.snapshots) - wanted):
        file_id = record.snapshots[gone]
        return DeleteSnapshot(gone, file_id, tuple(record.children(file_id)), record.files[file_id])
    if spec.size_bytes > record.size_bytes:
        return Grow(spec.size_bytes)
    return None


def _revert(spec: StoredVolumeSpec, record: VolumeRecord, seq: int, snapshot: str) -> Revert:
    if snapshot not in record.snapshots:
        raise StorageError(f"volume {spec.uuid}: cannot revert to snapshot {snapshot}: it does not exist")
    return Revert(seq, snapshot, record.snapshots[snapshot], record.new_file_id(), record.active)


def after(spec: StoredVolumeSpec, record: VolumeRecord | None, step: Step) -> VolumeRecord | None:
    """The record once `step` is done (None: the volume is gone)."""
    if isinstance(step, Delete):
        return None
    if isinstance(step, CreateBase):
        image = spec.image
        return VolumeRecord(uuid=spec.uuid, storage_uuid=spec.storage_uuid, image_uuid=image and image.uuid,
                            image_format=image and image.format, files={step.file_id: None}, active=step.file_id,
                            size_bytes=step.size)
    if record is None:
        raise ValueError(f"{step} needs a record")
    r = record.model_copy(deep=True)
    if isinstance(step, TakeSnapshot):
        r.files[step.new_active] = step.frozen
        r.active, r.next_file = step.new_active, r.next_file + 1
        r.snapshots[step.snapshot_uuid] = step.frozen
        r.snapshot_seq[step.snapshot_uuid] = step.seq
    elif isinstance(step, Revert):
        del r.files[step.discard]
        r.files[step.new_active] = step.onto
        r.active, r.next_file, r.revert_seq = step.new_active, r.next_file + 1, step.seq
    elif isinstance(step, DeleteSnapshot):
        for child in step.children:
            r.files[child] = step.onto
        del r.files[step.file_id]
        del r.snapshots[step.snapshot_uuid]
        r.snapshot_seq.pop(step.snapshot_uuid, None)
    else:
        r.size_bytes = step.size
    return r
