"""Downloading an image into a partial file: resumed with a Range request, verified by size and sha256.

Where to read comes from `locate` (a read ticket from the coordinator, `tickets.py`); a store that
refuses an expired ticket is asked again with a new one. The network read and the disk write + hash run
side by side (a bounded queue between the event loop and a worker thread), so a download goes at the
slower of the two, not at their sum, and hashing never stalls the agent's loop. Retries are here,
bounded: each try resumes where the last one stopped.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, TypeVar

import aiohttp

from agentkit.model import ImageRef
from kvmagent.errors import ImageFetchError, StorageError
from kvmagent.storage.tickets import Source

log = logging.getLogger(__name__)
CHUNK = 1 << 20
QUEUE = 16


class Sink:
    """The partial file and the running hash of everything in it."""

    def __init__(self, path: Path):
        self.path = path
        self.hash = hashlib.sha256()
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = 0

    def rehash(self, limit: int) -> None:
        """Hash what an earlier try left (no more than `limit` bytes: a longer file is not the image)."""
        with open(self.path, "rb") as f:
            while self.size < limit and (block := f.read(min(CHUNK, limit - self.size))):
                self.hash.update(block)
                self.size += len(block)
        os.ftruncate(self.fd, self.size)

    def restart(self) -> None:
        os.ftruncate(self.fd, 0)
        self.hash, self.size = hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        """All of `data`, counted and hashed as it reaches the file: os.write may write less (a signal, a
        filesystem nearly full), and a short file must never pass for the image."""
        rest = memoryview(data)
        while rest:
            n = os.write(self.fd, rest)
            if n == 0:  # no progress: fail rather than loop
                raise OSError(errno.EIO, "write made no progress")
            self.hash.update(rest[:n])
            self.size += n
            rest = rest[n:]

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)


class Blob(Protocol):
    """What is fetched: an image, or a file of a volume that migrates (`uuid` names it in messages)."""

    @property
    def uuid(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def size(self) -> int: ...


B = TypeVar("B", bound=Blob)
Locate = Callable[[aiohttp.ClientSession, ImageRef], Awaitable[Source]]


class Refused(Exception):
    """The store refused the credential (an expired ticket): ask for a new one and resume."""


async def fetch(session: aiohttp.ClientSession, image: B, partial: Path,
                locate: Callable[[aiohttp.ClientSession, B], Awaitable[Source]], *,
                stall: float = 60, retries: int = 3, progress: Callable[[int], None] = lambda n: None) -> None:
    """Download `image` into `partial` (kept between tries and passes) from where `locate` says; ImageFetchError
    when it cannot be had, or when what arrived is not the image (then the partial file is removed)."""
    loop = asyncio.get_running_loop()
    partial.parent.mkdir(parents=True, exist_ok=True)
    sink = Sink(partial)
    source: Source | None = None
    try:
        await loop.run_in_executor(None, sink.rehash, image.size)
        for attempt in range(1, retries + 1):
            try:
                if sink.size < image.size:
                    source = source or await locate(session, image)
                    await _get(session, image, source, sink, stall, progress)
                break
            except (aiohttp.ClientError, TimeoutError, Refused) as e:
                if attempt == retries:
                    where = _safe(source.url) if source else "?"
                    raise ImageFetchError(f"image {image.uuid}: GET {where} failed {retries} times, "
                                          f"last: {type(e).__name__}: {e}") from e
                log.warning("image %s: download interrupted at %d bytes (%s); resuming", image.uuid, sink.size, e)
                if isinstance(e, Refused):
                    source = None
                await asyncio.sleep(min(2.0 ** attempt, 10))
    finally:
        await loop.run_in_executor(None, sink.close)
    if sink.size != image.size or sink.hash.hexdigest() != image.sha256:
        partial.unlink(missing_ok=True)
        raise ImageFetchError(f"image {image.uuid}: got {sink.size} bytes with sha256 {sink.hash.hexdigest()}, "
                              f"expected {image.size} bytes with sha256 {image.sha256}")


async def _get(session: aiohttp.ClientSession, image: Blob, source: Source, sink: Sink, stall: float,
               progress: Callable[[int], None]) -> None:
    headers = {**source.headers, **({"Range": f"bytes={sink.size}-"} if sink.size else {})}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=stall, sock_read=stall)
    async with session.get(source.url, headers=headers, timeout=timeout) as r:
        if r.status == 200 and sink.size:
            sink.restart()  # the server ignores ranges: start over
        elif r.status == 206 and not r.headers.get("Content-Range", "").startswith(f"bytes {sink.size}-"):
            raise ImageFetchError(f"image {image.uuid}: asked for bytes {sink.size}-, got "
                                  f"{r.headers.get('Content-Range')!r}")
        elif r.status == 401:
            raise Refused((await r.text())[:200])
        elif r.status not in (200, 206):
            raise ImageFetchError(f"image {image.uuid}: GET {_safe(source.url)}: HTTP {r.status} "
                                  f"{(await r.text())[:200]}")
        await _pump(r, sink, image.size, progress)


async def _pump(r: aiohttp.ClientResponse, sink: Sink, limit: int, progress: Callable[[int], None]) -> None:
    """Network reads here, writes and hashing in a worker thread, at most QUEUE chunks apart. A failed
    write (a full disk) drains the queue so the reader never blocks, then ends the download."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE)
    failed: list[OSError] = []

    async def writer() -> None:
        while (data := await queue.get()) is not None:
            if failed:
                continue
            try:
                await loop.run_in_executor(None, sink.write, data)
            except OSError as e:
                failed.append(e)
            progress(sink.size)

    task = asyncio.create_task(writer())
    try:
        received = sink.size
        async for data in r.content.iter_chunked(CHUNK):
            received += len(data)
            if received > limit:
                raise ImageFetchError(f"the image store sent more than the {limit} bytes announced")
            await queue.put(data)
            if failed:
                break
    finally:
        await queue.put(None)
        await task
    if failed:
        raise StorageError(f"cannot write {sink.path}: {failed[0].strerror}")


def _safe(url: str) -> str:
    """The URL without its query (which may carry a credential) for messages and logs."""
    return url.split("?", 1)[0]
