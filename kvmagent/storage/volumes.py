"""Volumes as files: the steps of `plan.py` carried out with qemu-img (or libvirt, under a running VM).

Each step makes its files first, then saves the record that names them, then removes what the record no
longer names; a crash in between leaves a record that describes complete files. A snapshot re-run after
a crash keeps the overlay it had already made (same file id, same backing) where its VM may have written
there (qemu switched to it, and may have stopped since), rather than replacing it.

On a shared mount point every host sees the volume's files, and two may work on them at once: a volume
made on one host and attached at once to a VM on another is created by the first while the second
already has it (`POST /v1/vms/{uuid}/volumes` moves it there). So a host reads the record, plans and
carries out the steps holding the volume's lock (`Layout.volume_lock`, an flock every host of the
storage shares); the second then finds the first's record instead of replacing its file under a VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import uuid as uuidlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from agentkit.model import StoredVolumeSpec
from agentkit.proc import ProcessError
from kvmagent.errors import StorageError, VolumeBusy
from kvmagent.storage import qemuimg
from kvmagent.storage.holders import Holder, Holders
from kvmagent.storage.imagecache import ImageCache
from kvmagent.storage.layout import Layout
from kvmagent.storage.plan import CreateBase, Delete, DeleteSnapshot, Grow, Revert, Step, TakeSnapshot, after, next_step
from kvmagent.storage.record import FILE_ID, VolumeRecord, load, save

log = logging.getLogger(__name__)
LOCK_POLL = 0.05  # seconds between tries of a volume's lock another host holds


@dataclass(frozen=True)
class Waiting:
    """The volume waits for its image's download (`done` bytes so far)."""

    image_uuid: str
    done: int


class VolumeWorker:
    """Brings the volumes of one storage to their specs, one step at a time."""

    def __init__(self, layout: Layout, cache: ImageCache, holders: Holders):
        self.layout = layout
        self.cache = cache
        self.holders = holders

    async def converge(self, spec: StoredVolumeSpec) -> VolumeRecord | Waiting | None:
        """Step until `spec` holds; the final record (None: deleted), or what it waits for. StorageError when
        the storage's filesystem fails (full, read-only, I/O error, a stale NFS handle): as after a crash,
        the record still describes complete files and the step is retried."""
        try:
            async with self._locked(spec.uuid) as lock:
                result = await self._converge(spec)
                if result is None and spec.deleted:
                    lock.unlink(missing_ok=True)  # still held: whoever waits for it finds the volume gone
                return result
        except OSError as e:
            raise StorageError(f"volume {spec.uuid}: {e}") from e

    @contextlib.asynccontextmanager
    async def _locked(self, volume_uuid: str) -> AsyncIterator[Path]:
        """The volume's lock, held by this process until the block ends (polled: a wait costs no thread)."""
        path = self.layout.volume_lock(volume_uuid)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(LOCK_POLL)
            yield path
        finally:
            os.close(fd)  # and the lock with it

    async def _converge(self, spec: StoredVolumeSpec) -> VolumeRecord | Waiting | None:
        record = load(self.layout.record(spec.uuid))
        if record is not None:
            self._sweep(record)
        elif spec.deleted and self.layout.volume_dir(spec.uuid).exists():
            self._discard(spec.uuid)  # a create cut short left files that no record names
        while True:
            image_size = 0
            if record is None and spec.image is not None and not spec.deleted:
                if spec.image.format == "iso":
                    raise StorageError(f"volume {spec.uuid}: image {spec.image.uuid} is an ISO; it cannot back a "
                                       "volume")
                cached = self.cache.want(spec.image)
                if cached is None:
                    return Waiting(spec.image.uuid, self.cache.progress.get(spec.image.uuid, 0))
                image_size = cached.virtual_size
            step = next_step(spec, record, image_size)
            if step is None:
                return record
            garbage = await self._do(step, spec, record)
            record = after(spec, record, step)
            if record is not None:
                save(self.layout.record(spec.uuid), record)
            for path in garbage:
                path.unlink(missing_ok=True)
            log.info("volume %s: %s done", spec.uuid, step)

    def _sweep(self, record: VolumeRecord) -> None:
        """Remove the files a step discarded after saving the record, had a crash not come first: older than
        the record's next file and not in it (a newer one is an interrupted snapshot's overlay, kept for it)."""
        for path in self.layout.volume_dir(record.uuid).glob("f*.qcow2"):
            if FILE_ID.match(path.stem) and int(path.stem[1:]) < record.next_file and path.stem not in record.files:
                path.unlink(missing_ok=True)
                log.info("volume %s: removed %s, which it no longer names", record.uuid, path.name)

    def file(self, volume_uuid: str, file_id: str) -> Path:
        return self.layout.volume_file(volume_uuid, file_id)

    async def _do(self, step: Step, spec: StoredVolumeSpec, record: VolumeRecord | None) -> list[Path]:
        """Carry out `step`; the files to remove once the new record is saved."""
        if isinstance(step, CreateBase):
            await self._create(spec, step)
            return []
        assert record is not None  # every other step works on a made volume
        folder = self.layout.volume_dir(spec.uuid)
        holder = await self.holders.holder(folder)
        if isinstance(step, TakeSnapshot):
            await self._snapshot(spec, record, step, holder)
            return []
        if isinstance(step, Grow):
            if holder is not None:
                await self.holders.grow(holder, step.size)
            else:
                await qemuimg.resize(self.file(spec.uuid, record.active), step.size)
            return []
        if holder is not None:
            raise VolumeBusy(f"volume {spec.uuid} is in use by a running VM (domain {holder.domain}): "
                             f"stop it first to {type(step).__name__}")
        if isinstance(step, Revert):
            await self._overlay(spec.uuid, step.new_active, f"{step.onto}.qcow2", "qcow2", record.size_bytes)
            return [self.file(spec.uuid, step.discard)]
        if isinstance(step, DeleteSnapshot):
            backing, fmt = self._backing(record, step.onto)
            for child in step.children:
                await qemuimg.rebase(self.file(spec.uuid, child), backing, fmt)
            return [self.file(spec.uuid, step.file_id)]
        assert isinstance(step, Delete)
        self._discard(spec.uuid)
        return []

    def _discard(self, volume_uuid: str) -> None:
        """Remove the volume's directory: gone at once by a rename into the trash, deleted after."""
        trash = self.layout.trash / f"{volume_uuid}.{uuidlib.uuid4().hex[:8]}"
        trash.parent.mkdir(exist_ok=True)
        os.replace(self.layout.volume_dir(volume_uuid), trash)
        shutil.rmtree(trash, ignore_errors=True)

    async def _create(self, spec: StoredVolumeSpec, step: CreateBase) -> None:
        folder = self.layout.volume_dir(spec.uuid)
        folder.mkdir(parents=True, exist_ok=True)
        path = self.file(spec.uuid, step.file_id)
        path.unlink(missing_ok=True)  # no record names it: what an interrupted create left
        if spec.image is not None and step.over_image:
            self.cache.touch(spec.image.uuid)  # before the overlay: a collection elsewhere keeps the image
            await qemuimg.create(path, step.size, Layout.backing_name(spec.image.format, spec.image.uuid),
                                 spec.image.format)
        else:
            await qemuimg.create(path, step.size)

    async def _snapshot(self, spec: StoredVolumeSpec, record: VolumeRecord, step: TakeSnapshot,
                        holder: Holder | None) -> None:
        """A new overlay, made active under a running VM by libvirt. What an interrupted try made is kept where
        it may hold what the guest wrote: qemu switched to it (and goes on writing there), or switched before
        the crash and its VM stopped since (a power loss; the overlay is newer than the file it freezes). Where
        the guest saw the frozen file since (its VM runs on it, or wrote it last), it is made again blank."""
        overlay = self.file(spec.uuid, step.new_active)
        if holder is not None and holder.source == overlay:
            return
        frozen = self.file(spec.uuid, step.frozen)
        if holder is not None or not await _written_over(overlay, frozen):
            await self._overlay(spec.uuid, step.new_active, frozen.name, "qcow2", record.size_bytes)
        if holder is not None:
            await self.holders.snapshot(holder, overlay)  # a failure keeps the overlay: qemu may still switch to it

    async def _overlay(self, volume_uuid: str, file_id: str, backing: str, fmt: str, size: int) -> None:
        """A new qcow2 over `backing` (a name relative to the volume's directory)."""
        path = self.file(volume_uuid, file_id)
        path.unlink(missing_ok=True)  # made by an interrupted step, never used: no record or VM names it
        await qemuimg.create(path, size, backing, fmt)

    def _backing(self, record: VolumeRecord, file_id: str | None) -> tuple[str | None, str | None]:
        """How a file names `file_id` as its backing file (None: the volume's image, if it has one)."""
        if file_id is not None:
            return f"{file_id}.qcow2", "qcow2"
        if record.image_uuid and record.image_format:
            return Layout.backing_name(record.image_format, record.image_uuid), record.image_format
        return None, None


async def _written_over(overlay: Path, frozen: Path) -> bool:
    """Is `overlay` a whole qcow2 over `frozen` (beside it), written to no earlier than `frozen` was? One cut off
    while qemu-img made it is not."""
    try:
        if overlay.stat().st_mtime_ns < frozen.stat().st_mtime_ns:
            return False
        return (await qemuimg.info(overlay, "qcow2")).backing == frozen.name
    except (FileNotFoundError, ProcessError):
        return False
