"""The store's images: what is ready, downloading or failed, and the one place that changes that.

Ready images and their records are on disk (layout.py); downloads resume by themselves when the
agent starts again. A failed download leaves nothing on disk: its error is kept in memory for the
coordinator to read, until the image is deleted or added again. Each download is a task of the
process's Supervisor: a failure is a `DownloadFailed` shown on the image; anything else is a bug and
ends the process. At most `concurrency` downloads run at once; the others wait as `queued`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, get_args

from agentkit.addr import display_url
from agentkit.diskimage import ImageRejected, check_declared, inspect, read_head
from agentkit.metrics import LabelValues, Registry
from agentkit.supervise import Supervisor
from imagestore.download import (
    Download,
    Fetched,
    Policy,
    check_size,
    ensure_space,
    in_thread,
    settle_file,
    storage_error,
)
from imagestore.errors import (
    ChecksumMismatch,
    DownloadFailed,
    FormatRejected,
    ImageExists,
    ImageNotFound,
    NotReady,
)
from imagestore.layout import DATA, DownloadState, ImageRecord, Layout, boot_id
from imagestore.sources import Sources
from imagestore.tally import Tally
from imagestore.wire import (
    AddRequest,
    Capacity,
    ErrorInfo,
    Format,
    ImageInfo,
    Progress,
    State,
    check_media,
    default_media,
)

log = logging.getLogger(__name__)


@dataclass
class Entry:
    id: str
    request: AddRequest
    state: State
    created_at: float
    progress: Progress | None = None
    error: ErrorInfo | None = None
    record: ImageRecord | None = None
    task: asyncio.Task[None] | None = None
    allocated: int = 0  # bytes its data takes on disk: measured when it is ready (or found at start), not per ask

    @property
    def held(self) -> int:
        """The bytes it holds on disk as far as memory tells: a ready (or verified) image's as measured, a
        download's or upload's received so far (holes included), a queued download's as found at start."""
        if self.record is not None:
            return self.allocated
        if self.state != "downloading":
            return 0  # failed: nothing kept
        return self.progress.done if self.progress and self.progress.phase != "queued" else self.allocated

    def report(self, progress: Progress) -> None:
        self.progress = progress

    def info(self, actual_size: int | None = None) -> ImageInfo:
        req, rec = self.request, self.record
        return ImageInfo(
            id=self.id, state=self.state, url=display_url(req.url), format=rec.format if rec else req.format,
            media_type=rec.media_type if rec else req.media_type, size=rec.size if rec else None,
            virtual_size=rec.virtual_size if rec else None, actual_size=actual_size,
            sha256=rec.sha256 if rec else None, md5=rec.md5 if rec else None,
            progress=self.progress if self.state == "downloading" else None,
            percent=self.progress.percent if self.progress and self.state == "downloading" else None,
            error=self.error, created_at=self.created_at)


class Catalog:
    def __init__(self, layout: Layout, sources: Sources, policy: Policy, supervisor: Supervisor, tally: Tally,
                 concurrency: int = 2, inspect_timeout: float = 120):
        self.layout, self.sources, self.policy, self.supervisor = layout, sources, policy, supervisor
        self.tally = tally
        self.inspect_timeout = inspect_timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._settle_slot = asyncio.Semaphore(1)
        self._entries: dict[str, Entry] = {}

    def load(self) -> None:
        """Read the (prepared) directory: ready images as they are, downloads resumed, anything else removed."""
        for path, record in self.layout.ready():
            if record is None or record.id != path.name:
                log.warning("removing %s: no valid image record", path)
                self.layout.discard(path)
                continue
            lost = not record.synced and record.boot_id != boot_id()  # written before a reboot, maybe not on disk
            entry = Entry(record.id, record.request, "downloading" if lost else "ready", record.created_at,
                          progress=Progress(phase="verify", total=record.size) if lost else None, record=record,
                          allocated=self.layout.allocated(path / DATA))
            self._entries[record.id] = entry
            if lost or record.md5 is None:
                entry.task = self.supervisor.start(self._settle(entry, record, verify=lost), name=f"settle:{record.id}")
        for path, state in self.layout.downloads():
            if state is None or state.id != path.name or state.id in self._entries:
                log.warning("removing %s: no valid download state", path)
                self.layout.discard(path)
                continue
            self._start(Entry(state.id, state.request, "downloading", state.created_at,
                              allocated=self.layout.allocated(path / DATA)), state)

    def add(self, image_id: str, req: AddRequest) -> ImageInfo:
        """Start downloading `req` as `image_id`; the same request again answers the image as it is."""
        entry = self._entries.get(image_id)
        if entry is not None and entry.state != "failed":
            if entry.request != req:
                raise ImageExists(field="url", image_id=image_id, detail=_difference(entry.request, req))
            return self._info(entry)
        self.sources.check(req.url)
        now = time.time()
        state = DownloadState(id=image_id, request=req, boot_id=boot_id(), created_at=now)
        try:
            self.layout.start(state)
        except OSError as e:  # a full or read-only disk: the store's failure to say, not a bug
            self.layout.discard(self.layout.partial_dir(image_id))
            raise storage_error(self.layout, e, f"starting the download: {e}") from e
        entry = Entry(image_id, req, "downloading", now)
        self._start(entry, state)
        return self._info(entry)

    async def upload(self, image_id: str, req: AddRequest, chunks: AsyncIterator[bytes], size: int | None
                     ) -> ImageInfo:
        """Take an image's bytes from its uploader (a host sending an image made of a volume), checked and
        published as a download is; DownloadFailed (nothing kept) when they are not acceptable, or when their
        announced `size` would eat into `reserve_bytes` or exceed `max_size`. The same upload again once it is
        ready answers the image."""
        entry = self._entries.get(image_id)
        if entry is not None and entry.state != "failed":
            if entry.request != req or entry.state != "ready":
                raise ImageExists(field="image_id", image_id=image_id,
                                  detail=_difference(entry.request, req) if entry.request != req else "uploading")
            return self._info(entry)
        entry = Entry(image_id, req, "downloading", time.time(), progress=Progress(phase="download"))
        self._entries[image_id] = entry
        try:
            with self.tally.transfer("upload"):
                record = await self._take(entry, chunks, size)
        except DownloadFailed as e:  # shown on the image, as a failed download is
            entry.state, entry.error = "failed", ErrorInfo(code=e.code, message=e.message)
            raise
        except BaseException:
            if self._entries.get(image_id) is entry:
                del self._entries[image_id]
            raise
        entry.allocated = await asyncio.to_thread(self.layout.allocated, self.layout.data(image_id))
        entry.record, entry.state, entry.progress = record, "ready", Progress(phase="done", done=record.size,
                                                                              total=record.size)
        log.info("image uploaded", extra={"fields": {"image": image_id, "size": record.size, "url": req.url}})
        entry.task = self.supervisor.start(self._settle(entry, record), name=f"settle:{image_id}")
        return self._info(entry)

    async def _take(self, entry: Entry, chunks: AsyncIterator[bytes], size: int | None) -> ImageRecord:
        """The uploaded bytes into partial/<id>, then verified and published; nothing kept on any failure."""
        folder = self.layout.partial_dir(entry.id)
        reserve = self.policy.reserve_bytes
        try:
            if size is not None:
                check_size(self.policy, size, "the upload")
                await ensure_space(self.layout, reserve, size)
            await asyncio.to_thread(folder.mkdir)
            return await self._accept(entry, await self._receive(entry, folder / DATA, chunks))
        except OSError as e:
            raise storage_error(self.layout, e, f"receiving: {e}") from e
        finally:  # published folders moved away already; a deleted image's went with it (and may be another's now)
            if entry.record is None and self._entries.get(entry.id) is entry and folder.exists():
                await asyncio.to_thread(self.layout.discard, folder)

    async def _receive(self, entry: Entry, path: Path, chunks: AsyncIterator[bytes]) -> Fetched:
        sha256, md5 = hashlib.sha256(), hashlib.md5()  # noqa: S324 (the seeds' checksum)
        done = 0
        with open(path, "xb") as f:
            async for chunk in chunks:
                check_size(self.policy, done + len(chunk), "the upload so far")
                await asyncio.to_thread(_absorb, f, chunk, sha256, md5)
                self.tally.receive("upload", len(chunk))
                done += len(chunk)
                entry.report(Progress(phase="download", done=done))
        return Fetched(path, done, sha256.hexdigest(), md5.hexdigest())

    def _start(self, entry: Entry, state: DownloadState) -> None:
        entry.progress = Progress(phase="queued")
        self._entries[entry.id] = entry
        entry.task = self.supervisor.start(self._job(entry, state), name=f"download:{entry.id}")

    def get(self, image_id: str) -> ImageInfo:
        return self._info(self._entry(image_id))

    def list(self) -> list[ImageInfo]:
        return [self._info(e) for e in sorted(self._entries.values(), key=lambda e: e.created_at)]

    def ready(self, image_id: str) -> tuple[Path, ImageRecord]:
        """The data file and record of a ready image (what hosts read)."""
        entry = self._entry(image_id)
        if entry.state != "ready" or entry.record is None:
            raise NotReady(image_id=image_id, state=entry.state)
        return self.layout.data(image_id), entry.record

    async def delete(self, image_id: str) -> None:
        """Stop its download if one runs, and remove everything of it."""
        entry = self._entry(image_id)
        if entry.task is not None and not entry.task.done():
            entry.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await entry.task
        if self._entries.get(image_id) is entry:
            del self._entries[image_id]
        for directory in (self.layout.partial_dir(image_id), self.layout.image_dir(image_id)):
            await asyncio.to_thread(self.layout.discard, directory)  # both: a publish may have just renamed it
        log.info("image deleted", extra={"fields": {"image": image_id, "was": entry.state}})

    async def capacity(self) -> Capacity:
        """The filesystem's figures (one statvfs) and what the images hold, from memory: /health asks this at
        every probe, so it never walks the directory."""
        total, available = await asyncio.to_thread(self.layout.space)
        entries = list(self._entries.values())
        states = [e.state for e in entries]
        return Capacity(total=total, available=available, used=sum(e.held for e in entries),
                        images=states.count("ready"), downloading=states.count("downloading"))

    def register(self, registry: Registry) -> None:
        """What the store holds as series of `registry`, read when scraped from memory and one statvfs: a scrape
        never walks the directory."""
        registry.gauge("hoststack_imagestore_images", "images by state (downloading: queued, running, being "
                       "uploaded or checked after a reboot)", self._states, ("state",))
        registry.gauge("hoststack_imagestore_image_bytes", "the sizes of the ready images (thin ones take less "
                       "on disk)", lambda: [((), sum(e.record.size for e in self._entries.values()
                                                     if e.state == "ready" and e.record))])
        registry.gauge("hoststack_imagestore_free_bytes", "bytes free for the store on its filesystem",
                       lambda: [((), self.layout.available())])
        registry.gauge("hoststack_imagestore_reserve_bytes", "free space no download or upload may take "
                       "(reserve_bytes)", lambda: [((), self.policy.reserve_bytes)])

    def _states(self) -> Iterator[tuple[LabelValues, float]]:
        held = Counter(e.state for e in self._entries.values())
        return (((state,), held[state]) for state in get_args(State))

    def _entry(self, image_id: str) -> Entry:
        try:
            return self._entries[image_id]
        except KeyError:
            raise ImageNotFound(image_id=image_id) from None

    def _info(self, entry: Entry) -> ImageInfo:
        actual = None
        if entry.record is not None:
            with contextlib.suppress(FileNotFoundError):
                actual = self.layout.data(entry.id).stat().st_blocks * 512
        return entry.info(actual)

    async def _job(self, entry: Entry, state: DownloadState) -> None:
        started = time.monotonic()
        try:
            async with self._slots:
                with self.tally.transfer("download"):
                    record = await self._obtain(entry, state)
        except DownloadFailed as e:
            await asyncio.to_thread(self.layout.discard, self.layout.partial_dir(entry.id))
            entry.state, entry.error = "failed", ErrorInfo(code=e.code, message=e.message)
            log.warning("download failed", extra={"fields": {"image": entry.id, "code": e.code, "error": e.message}})
            return
        entry.allocated = await asyncio.to_thread(self.layout.allocated, self.layout.data(entry.id))
        entry.record, entry.state, entry.progress = record, "ready", Progress(phase="done", done=record.size,
                                                                              total=record.size)
        seconds = time.monotonic() - started
        log.info("image ready", extra={"fields": {"image": entry.id, "size": record.size, "format": record.format,
                                                  "sha256": record.sha256, "seconds": round(seconds, 3)}})
        await self._settle(entry, record)

    async def _settle(self, entry: Entry, record: ImageRecord, verify: bool = False) -> None:
        """What a ready image still needs, in the background (neither may slow its download down): its data
        made durable and, when no md5 was given to check, its md5. With `verify` (written before a reboot
        and maybe not on disk) its sha256 is checked first: an image that lost data is removed."""
        stop, path = threading.Event(), self.layout.data(entry.id)
        try:
            async with self._settle_slot:  # deleted, or the agent stops: the thread stops too
                sha, md5 = await in_thread(lambda: settle_file(path, stop, verify, record.md5 is None), stop.set)
            if verify and sha != record.sha256:
                await asyncio.to_thread(self.layout.discard, self.layout.image_dir(entry.id))
                entry.state, entry.record = "failed", None
                entry.error = ErrorInfo(code="storage_failed", message=f"image {entry.id} lost data in a reboot "
                                        "before it was on disk (sha256 differs); it was removed: add it again")
                log.error("image lost in a reboot", extra={"fields": {"image": entry.id, "sha256": sha}})
                return
            settled = record.model_copy(update={"md5": record.md5 or md5, "synced": True})
            await asyncio.to_thread(self.layout.rewrite, settled)  # on disk first: what the API shows is durable
            entry.allocated = await asyncio.to_thread(self.layout.allocated, path)  # its blocks are all placed now
        except OSError as e:  # a full disk, say: the image stays as it is, settled again at the next start
            log.warning("image not settled", extra={"fields": {"image": entry.id, "error": str(e)}})
            return
        entry.record, entry.state = settled, "ready"

    async def _obtain(self, entry: Entry, state: DownloadState) -> ImageRecord:
        """Download, verify and publish; DownloadFailed (nothing kept) when the data is not acceptable."""
        req = entry.request
        fetched = await Download(self.layout, self.sources, state, self.policy, entry.report,
                                 lambda head: _format(head, req), partial(self.tally.receive, "download")).run()
        return await self._accept(entry, fetched)

    async def _accept(self, entry: Entry, fetched: Fetched) -> ImageRecord:
        """Verify and publish the bytes in the partial directory (downloaded or uploaded)."""
        req = entry.request
        for algorithm, expected, actual in (("sha256", req.sha256, fetched.sha256), ("md5", req.md5, fetched.md5)):
            if expected is not None and expected != actual:
                raise ChecksumMismatch(field=algorithm, algorithm=algorithm, expected=expected, actual=actual)
        entry.report(Progress(phase="inspect", done=fetched.size, total=fetched.size))
        fmt = _format(await asyncio.to_thread(read_head, fetched.path), req)
        virtual_size = await self._virtual_size(fetched, fmt)
        record = ImageRecord(id=entry.id, request=req, format=fmt, media_type=req.media_type or default_media(fmt),
                             size=fetched.size, virtual_size=virtual_size, sha256=fetched.sha256, md5=fetched.md5,
                             created_at=entry.created_at, boot_id=await asyncio.to_thread(boot_id), synced=False)
        if self._entries.get(entry.id) is not entry:  # an upload (no task to cancel) whose image was deleted
            raise ImageNotFound(image_id=entry.id)  # meanwhile: partial/<id> may be another upload's by now
        try:
            await asyncio.to_thread(self.layout.publish, record)
        except OSError as e:
            raise storage_error(self.layout, e, f"publishing: {e}") from e
        return record

    async def _virtual_size(self, fetched: Fetched, fmt: Format) -> int:
        if fmt == "iso":
            return fetched.size
        try:
            virtual_size = (await inspect(fetched.path, fmt, self.inspect_timeout)).virtual_size
        except ImageRejected as e:
            raise FormatRejected(reason=str(e)) from e
        check_size(self.policy, virtual_size, f"the {fmt} image's virtual size")
        return virtual_size


def _format(head: bytes, req: AddRequest) -> Format:
    """The format the data is used as; FormatRejected when it is not what was declared or not accepted."""
    try:
        fmt = check_declared(head, req.format)
        check_media(fmt, req.media_type or default_media(fmt))
    except (ImageRejected, ValueError) as e:
        raise FormatRejected(reason=str(e)) from e
    return fmt  # type: ignore[return-value]


def _absorb(f: BinaryIO, chunk: bytes, *hashes: Any) -> None:
    f.write(chunk)
    for h in hashes:
        h.update(chunk)


def _difference(old: AddRequest, new: AddRequest) -> str:
    fields = [name for name in AddRequest.model_fields if getattr(old, name) != getattr(new, name)]
    return "different " + ", ".join(fields)
