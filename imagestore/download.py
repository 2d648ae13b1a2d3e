"""One image's bytes into partial/<id>/data: resumable, hashed on the way, thin, checkpointed.

The resume point survives an agent restart: on the same boot every byte in the file counts (a crashed
process leaves the page cache behind), after a reboot only the last fsync'd `durable` length does.
The hashes of the bytes already there are recomputed from the file, then the source is asked for the
rest (`Range`, with `If-Range` so a changed source starts over). A broken transfer resumes up to
`retries` times in a row, with capped, jittered backoff; any progress resets the count. Writing and
hashing run in a worker thread while the event loop reads the next chunk.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from agentkit.addr import display_url
from agentkit.diskimage import HEAD_SIZE, is_zero
from imagestore.errors import InsufficientSpace, SourceFailed, StorageFailed
from imagestore.layout import DATA, STATE, DownloadState, Layout, boot_id, write_json
from imagestore.sources import Interrupted, Sources
from imagestore.wire import Progress

log = logging.getLogger(__name__)
ProgressFn = Callable[[Progress], None]
HOLE = 64 << 10  # aligned all-zero blocks of this size are not written
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

    def write(self, data: bytes | bytearray) -> None:
        """Hash `data` (sha256) and put it at the end of the file, leaving aligned all-zero blocks as holes."""
        self.sha256.update(data)
        view, at, wrote_last = memoryview(data), 0, True
        while at < len(data):
            n = min(HOLE - (self.pos + at) % HOLE, len(data) - at)
            wrote_last = not is_zero(view[at:at + n])
            if wrote_last:
                os.pwrite(self.fd, view[at:at + n], self.pos + at)
            at += n
        self.pos += len(data)
        if not wrote_last:
            os.ftruncate(self.fd, self.pos)

    def md5_update(self, data: bytes | bytearray) -> None:
        """The md5 of the same data, in another thread at the same time (hashlib releases the GIL)."""
        assert self.md5 is not None
        self.md5.update(data)


def file_md5(path: Path) -> str:
    md5 = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while piece := f.read(8 << 20):
            md5.update(piece)
    return md5.hexdigest()


async def settle(work: list[asyncio.Future[None]]) -> None:
    """Wait for work running in threads; a cancelled caller does not cancel the work (it must end before
    the fd it uses is closed: `finish`)."""
    for future in work:
        await asyncio.shield(future)


async def finish(work: list[asyncio.Future[None]]) -> None:
    if pending := [f for f in work if not f.done()]:
        await asyncio.wait(pending)


class Download:
    def __init__(self, layout: Layout, sources: Sources, state: DownloadState, policy: Policy,
                 progress: ProgressFn, head_check: HeadCheck):
        self.layout, self.sources, self.state, self.policy = layout, sources, state, policy
        self.progress, self.head_check = progress, head_check
        self.dir = layout.partial_dir(state.id)
        self.shown = display_url(state.request.url)
        self._syncing: list[asyncio.Future[None]] = []  # the checkpoint's fdatasync in flight
        self._synced_at = 0

    async def run(self) -> Fetched:
        """The whole source in the data file, fsync'd; SourceFailed/StorageFailed/... when it cannot be."""
        try:
            fd = os.open(self.dir / DATA, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as e:
            raise self._storage_error(e) from e
        try:
            sink = await self._resume_point(fd)
            await self._transfer(sink)
            await settle(self._syncing)
            await asyncio.to_thread(os.fdatasync, fd)
        except OSError as e:
            raise self._storage_error(e) from e
        finally:
            await finish(self._syncing)
            os.close(fd)
        self.state.durable = sink.pos
        await asyncio.to_thread(write_json, self.dir / STATE, self.state)
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
            failures = 1 if sink.pos > before else failures + 1
            if failures > self.policy.retries:
                raise SourceFailed(url=self.shown, reason=f"{last_error} (gave up after {failures} tries)")
            delay = min(self.policy.backoff_cap, 0.5 * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)  # noqa: S311
            log.warning("download interrupted; resuming", extra={"fields": {
                "image": self.state.id, "offset": sink.pos, "error": last_error, "retry_in": round(delay, 2)}})
            await asyncio.sleep(delay)

    async def _attempt(self, sink: Sink) -> bool:
        """One request from `sink.pos`; True when the source's last byte is in."""
        async with self.sources.open(self.state.request.url, sink.pos, self.state.validator) as body:
            if body.start != sink.pos:
                log.info("the source cannot resume at %d: starting over", sink.pos,
                         extra={"fields": {"image": self.state.id}})
                sink.restart()
            await self._note_source(body.total, body.validator, sink.pos)
            self.progress(Progress(phase="download", done=sink.pos, total=self.state.total))
            checked = await self._stream(sink, body.chunks)
        if not checked:
            self.head_check(os.pread(sink.fd, HEAD_SIZE, 0))
        return self.state.total is None or sink.pos == self.state.total

    async def _stream(self, sink: Sink, chunks: AsyncIterator[bytes | bytearray]) -> bool:
        """Write `chunks`, each while the next one is read; True once the head was checked."""
        checked, synced, done = sink.pos >= HEAD_SIZE, sink.pos, sink.pos
        loop, work = asyncio.get_running_loop(), list[asyncio.Future[None]]()
        try:
            async for piece in chunks:
                await settle(work)
                work = [loop.run_in_executor(None, sink.write, piece)]
                if sink.md5 is not None:
                    work.append(loop.run_in_executor(None, sink.md5_update, piece))
                done += len(piece)  # once `work` is done (sink.pos moves in the worker thread)
                self.progress(Progress(phase="download", done=done, total=self.state.total))
                if not checked and done >= HEAD_SIZE:
                    await settle(work)
                    self.head_check(os.pread(sink.fd, HEAD_SIZE, 0))
                    checked = True
                if done - synced >= self.policy.checkpoint_bytes:
                    await settle(work)
                    await self._checkpoint(sink)
                    synced = sink.pos
        finally:
            await finish(work)
        await settle(work)  # a failed last write raises here
        return checked

    async def _note_source(self, total: int | None, validator: str | None, pos: int) -> None:
        """Record what the source says of itself; refuse a download the filesystem cannot hold."""
        if total is not None:
            available = await asyncio.to_thread(self.layout.available)
            if total - pos > available - self.policy.reserve_bytes:
                raise InsufficientSpace(root=str(self.layout.root), needed=total - pos, available=available,
                                        reserve=self.policy.reserve_bytes)
        if (total, validator) != (self.state.total, self.state.validator):
            self.state.total, self.state.validator = total, validator
            await asyncio.to_thread(write_json, self.dir / STATE, self.state)

    async def _checkpoint(self, sink: Sink) -> None:
        """Start flushing what is written so far, in the background; record the previous flush's offset as
        durable once it is done (downloading goes on meanwhile)."""
        if self._syncing:
            await settle(self._syncing)
            self.state.durable = self._synced_at
            await asyncio.to_thread(write_json, self.dir / STATE, self.state)
        self._synced_at = sink.pos
        self._syncing = [asyncio.get_running_loop().run_in_executor(None, os.fdatasync, sink.fd)]

    def _storage_error(self, e: OSError) -> StorageFailed | InsufficientSpace:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return InsufficientSpace(root=str(self.layout.root), needed="?", available=0,
                                     reserve=self.policy.reserve_bytes)
        return StorageFailed(root=str(self.layout.root), reason=f"{e.strerror or e}")
