"""One image's bytes into partial/<id>/data: resumable, hashed on the way, thin, checkpointed.

The resume point survives an agent restart: on the same boot every byte in the file counts (a crashed
process leaves the page cache behind), after a reboot only the last fsync'd `durable` length does.
The hashes of the bytes already there are recomputed from the file, then the source is asked for the
rest (`Range`, with `If-Range` so a changed source starts over). A broken transfer resumes up to
`retries` times in a row, with capped, jittered backoff; a MiB of progress resets the count, and less
than that in `read_timeout` breaks a transfer off (a trickle never trips the socket's timeout). The copy itself
(read into one buffer, hash, write) runs in one worker thread with blocking reads: no event loop turn
per packet, so a download goes about as fast as curl. Checkpoint fsyncs run beside it.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import random
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from agentkit.addr import display_url
from agentkit.diskimage import HEAD_SIZE, is_zero
from agentkit.pace import slowed
from imagestore.errors import InsufficientSpace, SourceFailed, StorageFailed, TooLarge
from imagestore.layout import DATA, STATE, DownloadState, Layout, boot_id, write_json
from imagestore.sources import CHUNK, Body, Interrupted, Sources
from imagestore.wire import Progress

log = logging.getLogger(__name__)
ProgressFn = Callable[[Progress], None]
HOLE = 64 << 10  # aligned all-zero blocks of this size are not written
T = TypeVar("T")
HeadCheck = Callable[[bytes], object]  # raises when the head is not acceptable


@dataclass(frozen=True)
class Fetched:
    path: Path
    size: int
    sha256: str
    md5: str | None  # computed only when the request has one to check


@dataclass(frozen=True)
class Policy:
    retries: int = 5
    checkpoint_bytes: int = 64 << 20
    reserve_bytes: int = 1 << 30
    max_size: int = 1 << 40
    backoff_cap: float = 30.0


class Sink:
    """Appends to the data file and hashes what it appends; all-zero blocks are left as holes."""

    def __init__(self, fd: int, start: int, md5: bool):
        self.fd, self.pos = fd, start
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False) if md5 else None

    def restart(self) -> None:
        """The source starts over: so does the file."""
        os.ftruncate(self.fd, 0)
        self.__init__(self.fd, 0, self.md5 is not None)  # type: ignore[misc]

    def rehash(self) -> None:
        """Hash the bytes already in the file (a resumed download)."""
        done = 0
        while done < self.pos:
            piece = os.pread(self.fd, min(8 << 20, self.pos - done), done)
            if not piece:
                raise OSError(errno.EIO, f"partial data ends at {done}, expected {self.pos}")
            self.sha256.update(piece)
            if self.md5 is not None:
                self.md5.update(piece)
            done += len(piece)

    def write(self, data: memoryview) -> None:
        """Hash `data` and put it at the end of the file, leaving aligned all-zero blocks as holes."""
        self.sha256.update(data)
        if self.md5 is not None:
            self.md5.update(data)
        at, wrote_last = 0, True
        while at < len(data):
            n = min(HOLE - (self.pos + at) % HOLE, len(data) - at)
            wrote_last = not is_zero(data[at:at + n])
            if wrote_last:
                os.pwrite(self.fd, data[at:at + n], self.pos + at)
            at += n
        self.pos += len(data)
        if not wrote_last:
            os.ftruncate(self.fd, self.pos)



def check_space(layout: Layout, reserve: int, needed: int) -> None:
    """Refuse `needed` more bytes (a download's or an upload's) when they would eat into `reserve`."""
    available = layout.available()
    if needed > available - reserve:
        raise InsufficientSpace(root=str(layout.root), needed=needed, available=available, reserve=reserve)


async def ensure_space(layout: Layout, reserve: int, needed: int) -> None:
    await asyncio.to_thread(check_space, layout, reserve, needed)


def check_size(policy: Policy, size: int, what: str) -> None:
    """Refuse an image's bytes (announced, or arrived so far) beyond `max_size`."""
    if size > policy.max_size:
        raise TooLarge(what=f"{what} ({size} bytes)", limit=policy.max_size)


def storage_error(layout: Layout, e: OSError, reason: str) -> StorageFailed | InsufficientSpace:
    """A failed write of an image's bytes: a full filesystem (or quota) is insufficient space, not a fault."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientSpace(f"{layout.root}: no room left for the image ({reason})")
    return StorageFailed(root=str(layout.root), reason=reason)


class Stopped(Exception):
    """The work was cancelled while its worker thread was at it."""


async def in_thread(fn: Callable[[], T], on_cancel: Callable[[], None]) -> T:
    """`fn()` in a worker thread. A thread cannot be cancelled: when the caller is, `on_cancel()` makes `fn`
    end, and the caller waits for that (it must be done with what it uses before the caller lets go)."""
    work = asyncio.get_running_loop().run_in_executor(None, fn)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        on_cancel()
        await asyncio.wait({work})
        if not work.cancelled():
            work.exception()  # Stopped, or whatever the stop made it raise: expected, not logged
        raise


def settle_file(path: Path, stop: threading.Event, sha256: bool, md5: bool) -> tuple[str | None, str | None]:
    """Hash a file as asked (one read for both), then make it durable (a worker thread; `stop` ends it early
    with Stopped). The (sha256, md5) asked for, None for the others."""
    hashes = [hashlib.sha256() if sha256 else None, hashlib.md5(usedforsecurity=False) if md5 else None]
    with open(path, "rb") as f:
        if sha256 or md5:
            while piece := f.read(8 << 20):
                if stop.is_set():
                    raise Stopped()
                for h in hashes:
                    if h is not None:
                        h.update(piece)
        os.fdatasync(f.fileno())
    sha, m5 = (h.hexdigest() if h is not None else None for h in hashes)
    return sha, m5


class Download:
    def __init__(self, layout: Layout, sources: Sources, state: DownloadState, policy: Policy,
                 progress: ProgressFn, head_check: HeadCheck, received: Callable[[int], None]):
        self.layout, self.sources, self.state, self.policy = layout, sources, state, policy
        self.progress, self.head_check, self.received = progress, head_check, received
        self.dir = layout.partial_dir(state.id)
        self.shown = display_url(state.request.url)
        self._stop = threading.Event()
        self._flusher = ThreadPoolExecutor(1, thread_name_prefix=f"flush-{state.id}")
        self._flushing: Future[None] | None = None  # the checkpoint's fdatasync in flight
        self._flushing_at = 0

    async def run(self) -> Fetched:
        """The whole source in the data file; SourceFailed/StorageFailed/... when it cannot be. The last bytes
        are not fsync'd here: the catalog does it once the image is ready (a final fsync would cost a first
        use a disk's speed), and checks an image that was not durable yet against its sha256 after a reboot.
        Until it is published, the state still counts only the last checkpoint as durable: a reboot before
        that fetches the rest again."""
        try:
            fd = os.open(self.dir / DATA, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as e:
            raise storage_error(self.layout, e, e.strerror or str(e)) from e
        try:
            sink = await self._resume_point(fd)
            await self._transfer(sink)
            await asyncio.to_thread(self._settle_flush)
        except OSError as e:
            raise storage_error(self.layout, e, e.strerror or str(e)) from e
        finally:
            self._flusher.shutdown(wait=True)  # no flush may outlive the fd
            os.close(fd)
        return Fetched(self.dir / DATA, sink.pos, sink.sha256.hexdigest(), sink.md5.hexdigest() if sink.md5 else None)

    async def _resume_point(self, fd: int) -> Sink:
        now = await asyncio.to_thread(boot_id)
        size = os.fstat(fd).st_size
        start = size if self.state.boot_id == now else min(size, self.state.durable)
        os.ftruncate(fd, start)
        sink = Sink(fd, start, md5=self.state.request.md5 is not None)
        if start:
            log.info("resuming download", extra={"fields": {"image": self.state.id, "offset": start,
                                                            "url": self.shown}})
            await asyncio.to_thread(sink.rehash)
        if self.state.boot_id != now:
            self.state.boot_id = now
            await asyncio.to_thread(write_json, self.dir / STATE, self.state)
        return sink

    async def _transfer(self, sink: Sink) -> None:
        failures, last_error = 0, ""
        while True:
            before = sink.pos
            try:
                if await self._attempt(sink):
                    return
                last_error = f"the source ended after {sink.pos} of {self.state.total} bytes"
            except Interrupted as e:
                last_error = str(e)
            failures = 1 if sink.pos - before >= CHUNK else failures + 1  # a trickle is no progress
            if failures > self.policy.retries:
                raise SourceFailed(url=self.shown, reason=f"{last_error} (gave up after {failures} tries)")
            delay = min(self.policy.backoff_cap, 0.5 * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)  # noqa: S311
            log.warning("download interrupted; resuming", extra={"fields": {
                "image": self.state.id, "offset": sink.pos, "error": last_error, "retry_in": round(delay, 2)}})
            await asyncio.sleep(delay)

    async def _attempt(self, sink: Sink) -> bool:
        """One request from `sink.pos`, copied by a worker thread; True when the source's last byte is in."""
        body = await asyncio.to_thread(self.sources.open, self.state.request.url, sink.pos, self.state.validator)
        try:
            if body.start != sink.pos:
                log.info("the source cannot resume at %d: starting over", sink.pos,
                         extra={"fields": {"image": self.state.id}})
                sink.restart()
            await self._note_source(body.total, body.validator, sink.pos)
            self.progress(Progress(phase="download", done=sink.pos, total=self.state.total))
            def stop() -> None:
                self._stop.set()
                body.abort()

            pace = asyncio.create_task(self._pace(body, sink))
            try:
                await in_thread(lambda: self._copy(body, sink), stop)
            except Interrupted:
                if not pace.done():
                    raise
            finally:
                pace.cancel()  # nothing to cancel once it is done
            if pace.done():  # it cut a trickle off, and the read ended or failed: say why
                raise Interrupted(pace.result())
        finally:
            body.close()
        return self.state.total is None or sink.pos == self.state.total

    async def _pace(self, body: Body, sink: Sink) -> str:
        """Break off a transfer that brings less than a chunk in `read_timeout` (the reason why): the socket's
        timeout sees a byte now and then as alive, so a source trickling would hold its slot for ever."""
        window = self.sources.read_timeout
        await slowed(lambda: sink.pos, window, CHUNK)
        body.abort()
        return f"GET {self.shown}: less than {CHUNK} bytes in {window:g} s"

    def _copy(self, body: Body, sink: Sink) -> None:
        """The worker thread: read into one buffer, hash and write it, check the head, checkpoint."""
        buf = memoryview(bytearray(CHUNK))
        checked, synced, total = sink.pos >= HEAD_SIZE, sink.pos, self.state.total
        while n := body.readinto(buf):
            if self._stop.is_set():
                raise Stopped()
            if total is not None and sink.pos + n > total:  # a 206 whose body outruns its Content-Range
                raise SourceFailed(url=self.shown, reason=f"it sent more than the {total} bytes it announced")
            check_size(self.policy, sink.pos + n, f"the data of {self.shown} so far")
            sink.write(buf[:n])
            self.received(n)
            self.progress(Progress(phase="download", done=sink.pos, total=self.state.total))
            if not checked and sink.pos >= HEAD_SIZE:
                self.head_check(os.pread(sink.fd, HEAD_SIZE, 0))
                checked = True
            if sink.pos - synced >= self.policy.checkpoint_bytes:
                self._checkpoint(sink)
                synced = sink.pos
                self._check_rest(sink.pos)
        if not checked:
            self.head_check(os.pread(sink.fd, HEAD_SIZE, 0))

    async def _note_source(self, total: int | None, validator: str | None, pos: int) -> None:
        """Record what the source says of itself; refuse a download too large or the filesystem cannot hold."""
        if total is not None:
            check_size(self.policy, total, self.shown)
            await ensure_space(self.layout, self.policy.reserve_bytes, total - pos)
        if (total, validator) != (self.state.total, self.state.validator):
            self.state.total, self.state.validator = total, validator
            await asyncio.to_thread(write_json, self.dir / STATE, self.state)

    def _check_rest(self, pos: int) -> None:
        """At a checkpoint: the rest must still fit above the reserve (all of it when the size is known, else up
        to the next checkpoint), as other downloads fill the same filesystem and an unknown size was never
        checked: a full disk is a failed download, not a store whose records can no longer be written."""
        total = self.state.total
        check_space(self.layout, self.policy.reserve_bytes,
                    total - pos if total is not None else self.policy.checkpoint_bytes)

    def _checkpoint(self, sink: Sink) -> None:
        """Start flushing what is written so far in the background; once the previous flush is done, its
        offset is recorded as durable (the copy goes on meanwhile)."""
        if self._flushing is not None and self._flushing.done():
            self._settle_flush()
        if self._flushing is None:
            self._flushing_at = sink.pos
            self._flushing = self._flusher.submit(os.fdatasync, sink.fd)

    def _settle_flush(self) -> None:
        """Wait for the flush in flight (if any) and record its offset as durable."""
        if self._flushing is None:
            return
        self._flushing.result()
        self._flushing = None
        self.state.durable = self._flushing_at
        write_json(self.dir / STATE, self.state)
