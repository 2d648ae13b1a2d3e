"""Images on Ceph backup storage: imported from a URL into an RBD image with a protected snapshot.

Clones (root volumes) are made from that snapshot (`wire.IMAGE_SNAPSHOT`). An import writes through
librbd with several writes in flight, as `rbd import` does, and skips all-zero chunks so thin images stay
thin. While an import runs the image carries the metadata key `hoststack.import=incomplete`; an image
left so by a crash or failure is removed when the same import is requested again (refused while a client has
it open: another cephagent of the cluster is importing it), and a complete one is returned as is (importing
is idempotent). The image is created and marked under a name no request gives
(`<name>~import`), then renamed, so it never has its name unmarked; one a crash left under that name goes
at the next import or delete of the image. A cancelled import (its image deleted, or the agent stopping) waits
for its worker thread before it ends, so nothing of it touches the pool after its task has ended.

An image is made of whole sectors, as a volume must be (`wire.SECTOR`): a raw source whose length is not a
multiple of 512 bytes is imported into an image of the next multiple, its tail reading as zeros (as a disk's
last partial sector would), so that its clones have a size a volume may have. qemu-img gives a qcow2 a whole
number of sectors already (it rounds a header's odd size down).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import rbd
from rados import Ioctx

from agentkit.addr import display_url
from agentkit.diskimage import data_extents, is_zero
from agentkit.metrics import Registry
from cephagent.cluster import CephCluster
from cephagent.errors import (
    AlreadyExists,
    ClusterUnavailable,
    HasDependants,
    ImageNotFound,
    ImportFailed,
    ImportInProgress,
    NotPermitted,
    PoolNotFound,
)
from cephagent.sources import (
    CHUNK,
    ProgressFn,
    RawFile,
    RawStream,
    SourceError,
    Sources,
)
from cephagent.volumes import Volumes, children_of, spec
from cephagent.wire import IMAGE_SNAPSHOT, MAX_SIZE, SECTOR, ImageImportRequest, ImageInfo, Progress
from cephagent.workers import Workers

log = logging.getLogger(__name__)
T = TypeVar("T")
MARKER = "hoststack.import"
TMP_PREFIX = "import-"  # an import's temp directory in tmp_dir
MAKING = "~import"  # an image is made and marked as `<name>~import`, a name no request gives (wire.Name), then renamed


def remove_leftovers(tmp_dir: str | Path) -> None:
    """Remove the temp directories of imports that a SIGKILL, the OOM killer or a power loss ended (call it at
    start, before any import runs): nothing else would, and tmp_dir usually shares a disk with the mon."""
    for leftover in sorted(Path(tmp_dir).glob(f"{TMP_PREFIX}*")):
        # no import made it (a tmp_dir others write, such as /tmp); rmtree's error would end every start
        if leftover.is_symlink() or not leftover.is_dir():
            log.warning("left alone what no import made", extra={"fields": {"path": str(leftover)}})
            continue
        shutil.rmtree(leftover)
        log.warning("removed the temp files of an interrupted import", extra={"fields": {"path": str(leftover)}})


class WriteError(Exception):
    pass


def whole_sectors(size: int) -> int:
    """`size` bytes rounded up to a multiple of 512: the size of the RBD image that holds them."""
    return -(-size // SECTOR) * SECTOR


async def joined(workers: Workers, stop: threading.Event, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on the imports' worker threads. A thread cannot be cancelled: when the import is, `stop` is set
    (a write loop ends at its next chunk) and the import waits for the thread, so that a DELETE which cancelled
    it removes the image only once nothing of the import creates, writes or holds it open."""
    work = asyncio.ensure_future(workers.run("import", fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.wait({work})
        if not work.cancelled():
            work.exception()  # WriteError("cancelled"), or what the stop made it raise: expected, not logged
        raise


class Written:
    """Bytes the imports wrote to RBD while the process lives, for /metrics: counted as librbd completes each write
    (on its callback threads)."""

    def __init__(self) -> None:
        self.bytes = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes += n


class AioWriter:
    """Keeps up to `window` RBD writes in flight; all-zero chunks are skipped (a new image reads as zeros)."""

    def __init__(self, image: rbd.Image, window: int, written: Written):
        self.image = image
        self.window = window
        self.written = written
        self._slots = threading.Semaphore(window)
        self._error: str | None = None

    def write(self, data: bytes, offset: int) -> None:
        if is_zero(data):
            return
        self._slots.acquire()
        if self._error:
            self._slots.release()
            raise WriteError(self._error)
        self.image.aio_write(data, offset, functools.partial(self._done, len(data)))

    def _done(self, size: int, completion: rbd.Completion) -> None:
        rv = completion.get_return_value()
        if rv < 0 and self._error is None:
            self._error = f"RBD write failed: {os.strerror(-rv)}"
        elif rv >= 0:
            self.written.add(size)
        self._slots.release()

    def finish(self) -> None:
        """Wait for every write in flight, then flush; raise the first failure."""
        for _ in range(self.window):
            self._slots.acquire()
        for _ in range(self.window):
            self._slots.release()
        if self._error:
            raise WriteError(self._error)
        self.image.flush()


class Images:
    def __init__(self, cluster: CephCluster, volumes: Volumes, sources: Sources, workers: Workers,
                 tmp_dir: str | Path, window: int = 16):
        self.cluster = cluster
        self.volumes = volumes
        self.sources = sources
        self.workers = workers
        self.tmp_dir = Path(tmp_dir)
        self.window = window
        self.written = Written()

    def register(self, registry: Registry) -> None:
        """What the imports wrote as a series of `registry`, read when scraped."""
        registry.count("hoststack_ceph_import_written_bytes_total", "bytes image imports wrote to RBD (all-zero "
                       "chunks are skipped, not written)", lambda: [((), self.written.bytes)])

    async def import_url(self, req: ImageImportRequest, progress: ProgressFn) -> ImageInfo:
        """Import `req.url` as `req.pool/req.name`; an already imported image is returned unchanged."""
        stop = threading.Event()
        existing = await joined(self.workers, stop, self._existing, req.pool, req.name)
        if existing is not None:
            return existing
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=self.tmp_dir, prefix=TMP_PREFIX) as tmp:
                async with self.sources.raw(req.url, req.format, Path(tmp), progress) as src:
                    if src.size <= 0:
                        raise SourceError("the image is empty")
                    if src.size > MAX_SIZE:  # as a volume may be; librbd took even 2^64 - 1 bytes
                        raise SourceError(f"the image is {src.size} bytes, more than {MAX_SIZE} (1 PiB)")
                    await joined(self.workers, stop, self._create, req.pool, req.name, whole_sectors(src.size))
                    if isinstance(src, RawStream):
                        await self._write_stream(req, src, progress, stop)
                    else:
                        await joined(self.workers, stop, self._write_file, req, src, progress, stop)
            info = await joined(self.workers, stop, self._seal, req.pool, req.name)
        except (SourceError, WriteError, rbd.Error, OSError, ClusterUnavailable, NotPermitted) as e:
            await self.workers.run("import", self._discard, req.pool, req.name)
            reason = await self.workers.run("import", self._why, req.pool, e)
            raise ImportFailed(spec=spec(req.pool, req.name), url=display_url(req.url), reason=reason) from e
        log.info("imported image", extra={"fields": {"image": spec(req.pool, req.name), "size": info.size,
                                                     "url": display_url(req.url)}})
        return info

    def check_unclaimed(self, pool: str, name: str) -> None:
        """ImportInProgress while an incomplete `pool/name` has a client: another cephagent of the cluster writes
        it (the coordinator failed over to this one), or one that died less than `osd_client_watch_timeout` (30 s)
        ago held it. Nothing to say without such an image (or pool: the import says so)."""
        try:
            with self.volumes.open(pool, name, read_only=True) as image:
                importers = [w["addr"] for w in image.watchers_list()] if MARKER in dict(image.metadata_list()) \
                    else []
        except (ImageNotFound, PoolNotFound):
            return
        if importers:
            raise ImportInProgress(field="name", spec=spec(pool, name), watchers=", ".join(importers))

    def _existing(self, pool: str, name: str) -> ImageInfo | None:
        self.check_unclaimed(pool, name)
        try:
            with self.volumes.open(pool, name, read_only=True) as image:
                incomplete = MARKER in dict(image.metadata_list())
        except ImageNotFound:
            return None
        if incomplete:
            self._discard(pool, name)
            return None
        try:
            return self.info(pool, name)
        except ImageNotFound:
            raise AlreadyExists(field="name", spec=spec(pool, name),
                                detail=f" and is not an imported image (no protected snapshot {IMAGE_SNAPSHOT!r})") \
                from None

    def _create(self, pool: str, name: str, size: int) -> None:
        """The image, marked incomplete from the moment it has its name (created under it, a crash before the
        mark left an image a retry refused as not an imported one)."""
        making = name + MAKING
        with self.cluster.ioctx(pool) as io:
            self._forget(io, making)
            self.volumes.rbd.create(io, making, size, old_format=False)
            with rbd.Image(io, making) as image:
                image.metadata_set(MARKER, "incomplete")
            self.volumes.rbd.rename(io, making, name)

    def _forget(self, io: Ioctx, making: str) -> None:
        """Remove what a crash left of an image being made under its own name."""
        with contextlib.suppress(rbd.ImageNotFound):
            self.volumes.rbd.remove(io, making)
            log.warning("removed the image an interrupted import was making", extra={"fields": {"image": making}})

    def _write_file(self, req: ImageImportRequest, src: RawFile, progress: ProgressFn, stop: threading.Event) -> None:
        with self.volumes.open(req.pool, req.name) as image, open(src.path, "rb") as f:
            writer = AioWriter(image, self.window, self.written)
            for start, length in data_extents(f.fileno(), src.size):
                pos, end = start, start + length
                while pos < end:
                    if stop.is_set():
                        raise WriteError("cancelled")
                    n = min(CHUNK - pos % CHUNK, end - pos)
                    writer.write(os.pread(f.fileno(), n, pos), pos)
                    pos += n
                    progress(Progress(phase="write", done=pos, total=src.size))
            writer.finish()
        progress(Progress(phase="write", done=src.size, total=src.size))

    async def _write_stream(self, req: ImageImportRequest, src: RawStream, progress: ProgressFn,
                            stop: threading.Event) -> None:
        stack = contextlib.ExitStack()  # the image is opened and closed in worker threads, not in the loop
        image = await joined(self.workers, stop, stack.enter_context, self.volumes.open(req.pool, req.name))
        try:
            writer = AioWriter(image, self.window, self.written)
            pending, pos = bytearray(src.head), 0
            async for piece in src.response.content.iter_chunked(1 << 20):
                pending += piece
                while len(pending) >= CHUNK:
                    await joined(self.workers, stop, writer.write, bytes(pending[:CHUNK]), pos)
                    del pending[:CHUNK]
                    pos += CHUNK
                    progress(Progress(phase="write", done=pos, total=src.size))
            if pending:
                await joined(self.workers, stop, writer.write, bytes(pending), pos)
                pos += len(pending)
            await joined(self.workers, stop, writer.finish)
        finally:
            await joined(self.workers, stop, stack.close)
        if pos != src.size:
            raise SourceError(f"download ended after {pos} of {src.size} bytes")
        progress(Progress(phase="write", done=pos, total=src.size))

    def _seal(self, pool: str, name: str) -> ImageInfo:
        """Snapshot and protect the written image, then drop the incomplete marker."""
        with self.volumes.open(pool, name) as image:
            image.create_snap(IMAGE_SNAPSHOT)
            image.protect_snap(IMAGE_SNAPSHOT)
            image.metadata_remove(MARKER)
        return self.info(pool, name)

    def _why(self, pool: str, e: Exception) -> str:
        """`e` as an import's failure, with the cause when Ceph failed and the pool is full: its writes then wait
        until they time out, and say only that (the image is left marked, for the next import or delete to remove)."""
        full = self.cluster.full(pool) if isinstance(e, (WriteError, rbd.Error, ClusterUnavailable)) else None
        return f"{e}; pool {pool} is full ({full}): raise its quota or add OSDs, then import again" if full else str(e)

    def _discard(self, pool: str, name: str) -> None:
        """Best-effort removal of a partial import (including a snapshot made just before a failure)."""
        with contextlib.suppress(ImageNotFound, rbd.Error, ClusterUnavailable):
            with self.volumes.open(pool, name) as image:
                for s in image.list_snaps():
                    if image.is_protected_snap(s["name"]):
                        image.unprotect_snap(s["name"])
                    image.remove_snap(s["name"])
            with self.cluster.ioctx(pool) as io:
                self.volumes.rbd.remove(io, name)

    def info(self, pool: str, name: str) -> ImageInfo:
        """An imported image; ImageNotFound when absent or still being imported."""
        with self.volumes.open(pool, name, read_only=True) as image:
            if MARKER in dict(image.metadata_list()) or not image.snap_exists(IMAGE_SNAPSHOT) or \
                    not image.is_protected_snap(IMAGE_SNAPSHOT):
                raise ImageNotFound(spec=spec(pool, name, IMAGE_SNAPSHOT))
            return ImageInfo(pool=pool, name=name, size=image.size(), children=children_of(image, IMAGE_SNAPSHOT))

    def delete(self, pool: str, name: str) -> bool:
        """Remove an image unless volumes were cloned from it (they are named); False if it was absent."""
        try:
            with self.volumes.open(pool, name, read_only=True) as image:
                base = image.snap_exists(IMAGE_SNAPSHOT)
                children = children_of(image, IMAGE_SNAPSHOT) if base else []
            if children:
                raise HasDependants(spec=spec(pool, name), count=len(children), dependants=", ".join(children))
            if base:
                with self.volumes.open(pool, name) as image:
                    if image.is_protected_snap(IMAGE_SNAPSHOT):
                        image.unprotect_snap(IMAGE_SNAPSHOT)
        except ImageNotFound:
            with self.cluster.ioctx(pool) as io:
                self._forget(io, name + MAKING)
            return False
        return self.volumes.delete(pool, name)
