"""Image sources: a URL (http, https, file) turned into raw disk data ready to be written to RBD.

A raw body of known length over HTTP is streamed straight through (no local copy). Anything else
(qcow2, or a body without Content-Length) is first spooled to a sparse temp file; qcow2 is then
converted to a sparse raw temp file with `qemu-img convert` (qcow2 needs random access, so it cannot be
converted from a stream). qcow2 files that reference other files (backing file, external data file)
are refused: they would make the agent read host files. file:// URLs are served only below the
configured roots: nothing outside them is opened (opening a device can act: /dev/watchdog arms the
watchdog), one error answers whether it exists or not, and the path is walked from the root without
following symlinks (agentkit.confined: the check is the open). URLs are shown without credentials or
query strings in messages. Temp files never eat into the last `reserve_percent` of their filesystem's space:
a download that would is ended, a conversion killed (the mon, which usually shares that disk, stops below
5% free: `mon_data_avail_crit`), so an endless body or a qcow2 that inflates fails the import instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import aiohttp

from agentkit.addr import display_url
from agentkit.confined import Refused, open_beneath, resolve_roots
from agentkit.diskimage import QCOW2_MAGIC, ImageRejected, check_qcow2_header, inspect, is_zero, read_head
from agentkit.pace import slowed
from agentkit.proc import ProcessError, arun
from cephagent.wire import Progress

log = logging.getLogger(__name__)
CHUNK = 4 << 20  # RBD's default object size: writes of whole objects
PACE = 1 << 20  # bytes a body must bring in each `read_timeout` (agentkit.pace)
ROOM_CHECK_INTERVAL = 1.0  # seconds between free-space checks while qemu-img converts
ProgressFn = Callable[[Progress], None]


class SourceError(Exception):
    """The source cannot be read or is not an acceptable disk image; the message says why."""


@dataclass
class RawFile:
    """Raw disk data in a local (possibly sparse) file."""

    path: Path
    size: int


@dataclass
class RawStream:
    """A raw HTTP body of known length; `head` holds the bytes already read from it."""

    response: aiohttp.ClientResponse
    head: bytes
    size: int


def detect(head: bytes, declared: str) -> str:
    """`raw` is taken at its word (copied as is); `qcow2` and `auto` go by the qcow2 magic."""
    if declared == "raw":
        return "raw"
    actual = "qcow2" if head.startswith(QCOW2_MAGIC) else "raw"
    if declared == "qcow2" and actual != "qcow2":
        raise SourceError("declared format qcow2, but the data has no qcow2 header")
    return actual


def free_space(path: Path) -> tuple[int, int]:
    """(size, bytes available to us) of the filesystem holding `path`."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def ensure_room(directory: Path, more: int, reserve_percent: float) -> None:
    """SourceError unless `more` bytes still fit in `directory`'s filesystem above its reserve."""
    size, available = free_space(directory)
    reserve = int(size * reserve_percent / 100)
    if available - more < reserve:
        raise SourceError(f"{directory} is full: {available} bytes free, and {reserve} ({reserve_percent:g}% of its "
                          "filesystem) are kept free (setting tmp_reserve_percent)")


class Sources:
    def __init__(self, session: aiohttp.ClientSession, file_roots: Sequence[str | Path], convert_timeout: float,
                 reserve_percent: float = 10, read_timeout: float = 300):
        self.session = session
        self.file_roots = resolve_roots(file_roots)
        self.convert_timeout = convert_timeout
        self.reserve_percent = reserve_percent
        self.read_timeout = read_timeout

    @contextlib.asynccontextmanager
    async def raw(self, url: str, declared: str, workdir: Path, progress: ProgressFn
                  ) -> AsyncIterator[RawFile | RawStream]:
        """Yield the URL's content as raw disk data; temp files go to `workdir` (the caller removes it)."""
        parts = urlsplit(url)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):  # file://server/x would read this host's /x
                raise SourceError(f"file:// URLs name no host: {display_url(url)}")
            with self.opened(parts.path) as path:
                yield await self._raw_file(path, declared, workdir, progress)
            return
        async with self._get(url) as resp:
            head = await _read_head(resp.content)
            length = resp.content_length
            if detect(head, declared) == "raw" and length is not None:
                yield RawStream(resp, head, length)
                return
            path = workdir / "download"
            await self._spool(resp, head, path, progress)
        yield await self._raw_file(path, declared, workdir, progress)

    @contextlib.contextmanager
    def opened(self, url_path: str) -> Iterator[Path]:
        """A file:// URL's file, opened once below a root (agentkit.confined). Readers (this process,
        `qemu-img`) get its `/proc/<pid>/fd/<n>` path, which opens that very file, so swapping a name for
        a symlink after the open reads nothing else."""
        if not self.file_roots:
            raise SourceError("file:// URLs are disabled on this agent (setting file_url_roots)")
        try:
            fd = open_beneath(self.file_roots, unquote(url_path))
        except Refused as e:
            raise SourceError(str(e)) from None
        try:
            yield Path(f"/proc/{os.getpid()}/fd/{fd}")
        finally:
            os.close(fd)

    @contextlib.asynccontextmanager
    async def _get(self, url: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response's body as the server stores it: its Content-Length counts the bytes we read, which an
        encoding (gzip, which aiohttp asks for and undoes by default) would not. Its reads fail once it keeps
        no pace (`_pace`)."""
        shown = display_url(url)
        try:
            async with self.session.get(url, headers={"Accept-Encoding": "identity"}) as resp:
                if resp.status != 200:
                    raise SourceError(f"GET {shown}: HTTP {resp.status} {resp.reason or ''}".rstrip())
                encoding = resp.headers.get("Content-Encoding", "identity")
                if encoding.lower() != "identity":
                    raise SourceError(f"GET {shown}: the server sent {encoding}-encoded data (not the image's bytes, "
                                      "which were asked for)")
                pace = asyncio.create_task(self._pace(resp.content, shown))
                try:
                    yield resp
                finally:
                    pace.cancel()
                    await asyncio.wait({pace})
        except (aiohttp.ClientError, TimeoutError) as e:
            raise SourceError(f"GET {shown}: {type(e).__name__}: {e}") from e

    async def _pace(self, body: aiohttp.StreamReader, shown: str) -> None:
        """Fail the body's reads once less than a MiB came in `read_timeout` (agentkit.pace): a source trickling a
        byte now and then never trips the socket's timeout, and held its import slot for ever."""
        await slowed(lambda: body.total_bytes, self.read_timeout, PACE)
        body.set_exception(SourceError(f"GET {shown}: less than {PACE} bytes came in {self.read_timeout:g} s "
                                       "(setting read_timeout)"))

    async def _spool(self, resp: aiohttp.ClientResponse, head: bytes, path: Path, progress: ProgressFn) -> None:
        """Download to a sparse file: all-zero chunks become holes."""
        total, done = resp.content_length, 0
        with open(path, "wb") as f:
            pending = bytearray(head)
            async for piece in resp.content.iter_chunked(1 << 20):
                pending += piece
                if len(pending) >= CHUNK:
                    done += await asyncio.to_thread(self._write_sparse, f, pending)
                    pending = bytearray()
                    progress(Progress(phase="download", done=done, total=total))
            done += await asyncio.to_thread(self._write_sparse, f, pending)
            f.truncate(done)
        if total is not None and done != total:
            raise SourceError(f"download ended after {done} of {total} bytes")
        progress(Progress(phase="download", done=done, total=done))

    async def _raw_file(self, path: Path, declared: str, workdir: Path, progress: ProgressFn) -> RawFile:
        with open(path, "rb") as f:
            head = f.read(512)
        size = path.stat().st_size
        if detect(head, declared) == "raw":
            return RawFile(path, size)
        virtual = await self._check_qcow2(path)
        progress(Progress(phase="convert", done=0, total=virtual))
        out = workdir / "converted.raw"
        await self._convert(path, out)
        progress(Progress(phase="convert", done=virtual, total=virtual))
        return RawFile(out, out.stat().st_size)

    async def _convert(self, path: Path, out: Path) -> None:
        """`qemu-img convert` to raw, killed once its output eats into the reserve (checked every second):
        compressed clusters can inflate a small qcow2 to terabytes of data."""
        convert = asyncio.ensure_future(arun(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(path), str(out)],
                                             timeout=self.convert_timeout))
        try:
            while not (await asyncio.wait({convert}, timeout=ROOM_CHECK_INTERVAL))[0]:
                ensure_room(out.parent, 0, self.reserve_percent)
            await convert
        except ProcessError as e:
            raise SourceError(f"converting qcow2 to raw: {e.stderr.strip() or e}") from e
        finally:
            convert.cancel()  # kills qemu-img (agentkit.proc.arun) when the check or a cancellation ends it early
            await asyncio.wait({convert})

    async def _check_qcow2(self, path: Path) -> int:
        """Virtual size of a self-contained qcow2 (agentkit.diskimage: no backing or data file, no encryption)."""
        try:
            check_qcow2_header(await asyncio.to_thread(read_head, path))
            return (await inspect(path, "qcow2")).virtual_size
        except ImageRejected as e:
            raise SourceError(str(e)) from e

    def _write_sparse(self, f: BinaryIO, data: bytes | bytearray) -> int:
        if is_zero(data):
            f.seek(len(data), os.SEEK_CUR)
        else:
            ensure_room(Path(f.name).parent, len(data), self.reserve_percent)
            f.write(data)
        return len(data)


async def _read_head(content: aiohttp.StreamReader, want: int = 512) -> bytes:
    head = b""
    while len(head) < want:
        piece = await content.read(want - len(head))
        if not piece:
            break
        head += piece
    return head

