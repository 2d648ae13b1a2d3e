"""Where image bytes come from: an HTTP(S) URL, read from an offset with `Range`, or a file:// URL below
the configured roots (agentkit.confined: no symlink is followed, the check is the open).

`open(url, offset, validator)` yields a `Body`: the bytes from `body.start` on. A source that cannot
resume (no Range support, or it changed: `If-Range` with the validator seen first) starts over at 0,
and the caller starts over with it. `Interrupted` is a broken transfer worth resuming; `SourceFailed`
is final. URLs appear in messages without credentials or query.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp

from agentkit.addr import display_url
from agentkit.confined import Refused, open_beneath, resolve_roots
from imagestore.errors import SourceFailed, UrlRefused

CHUNK = 1 << 20
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class Interrupted(Exception):
    """The transfer broke off (connection lost, timeout, a 5xx): resume it."""


@dataclass
class Body:
    start: int
    total: int | None
    validator: str | None
    chunks: AsyncIterator[bytes | bytearray]


class Sources:
    def __init__(self, session: aiohttp.ClientSession, file_roots: Sequence[str | Path]):
        self.session = session
        self.file_roots = resolve_roots(file_roots)

    def check(self, url: str) -> None:
        """Refuse at once what can never be read: a file:// URL where it is disabled or not allowed."""
        parts = urlsplit(url)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise UrlRefused(field="url", reason=f"file:// URLs name no host: {display_url(url)}")
            try:
                os.close(open_beneath(self.file_roots, unquote(parts.path)))
            except Refused as e:
                raise UrlRefused(field="url", reason=str(e)) from None

    @contextlib.asynccontextmanager
    async def open(self, url: str, offset: int, validator: str | None) -> AsyncIterator[Body]:
        if urlsplit(url).scheme == "file":
            async with self._file(url, offset, validator) as body:
                yield body
        else:
            async with self._http(url, offset, validator) as body:
                yield body

    @contextlib.asynccontextmanager
    async def _file(self, url: str, offset: int, validator: str | None) -> AsyncIterator[Body]:
        try:
            fd = open_beneath(self.file_roots, unquote(urlsplit(url).path))
        except Refused as e:
            raise SourceFailed(url=display_url(url), reason=str(e)) from None
        try:
            st = os.fstat(fd)
            seen = f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"
            start = offset if seen == validator else 0
            yield Body(start, st.st_size, seen, _read_fd(fd, start, st.st_size))
        finally:
            os.close(fd)

    @contextlib.asynccontextmanager
    async def _http(self, url: str, offset: int, validator: str | None) -> AsyncIterator[Body]:
        shown = display_url(url)
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if validator:
                headers["If-Range"] = validator
        try:
            async with self.session.get(url, headers=headers) as resp:
                yield _body(resp, shown, offset)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise Interrupted(f"GET {shown}: {type(e).__name__}: {e}") from e


def _body(resp: aiohttp.ClientResponse, shown: str, offset: int) -> Body:
    """The response as a Body starting at `offset` (206) or at 0 (200); errors for anything else."""
    status = f"GET {shown}: HTTP {resp.status} {resp.reason or ''}".rstrip()
    if resp.status in RETRYABLE_STATUS:
        raise Interrupted(status)
    if resp.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise SourceFailed(url=shown, reason=f"the server sent {resp.headers['Content-Encoding']}-encoded data")
    validator = _validator(resp)
    if resp.status == 200:
        return Body(0, resp.content_length, validator, _chunks(resp, shown))
    if resp.status == 206:
        m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) != offset:
            raise SourceFailed(url=shown, reason=f"asked for bytes from {offset}, got Content-Range "
                                                 f"{resp.headers.get('Content-Range')!r}")
        total = None if m.group(3) == "*" else int(m.group(3))
        return Body(offset, total, validator, _chunks(resp, shown))
    if resp.status == 416 and resp.headers.get("Content-Range") == f"bytes */{offset}":
        return Body(offset, offset, validator, _nothing())  # everything was already here
    raise SourceFailed(url=shown, reason=status)


def _validator(resp: aiohttp.ClientResponse) -> str | None:
    """What If-Range may carry (RFC 9110 13.1.5): a strong ETag, else a valid Last-Modified date."""
    etag = resp.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    modified = resp.headers.get("Last-Modified")
    if modified:
        with contextlib.suppress(TypeError, ValueError):
            parsedate_to_datetime(modified)
            return modified
    return None


async def _chunks(resp: aiohttp.ClientResponse, shown: str) -> AsyncIterator[bytes | bytearray]:
    """The body in pieces of CHUNK bytes. Data is taken from aiohttp as soon as it arrives (aiohttp drops
    what it still holds when the connection breaks), and what was taken is handed over before the break."""
    held, broken = bytearray(), None
    try:
        async for piece in resp.content.iter_any():
            held += piece
            if len(held) >= CHUNK:
                yield held  # handed over whole: a new buffer follows
                held = bytearray()
    except (aiohttp.ClientError, TimeoutError) as e:
        broken = Interrupted(f"GET {shown}: {type(e).__name__}: {e}")
    if held:
        yield held
    if broken is not None:
        raise broken


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""


async def _read_fd(fd: int, start: int, size: int) -> AsyncIterator[bytes]:
    pos = start
    while pos < size:
        piece = await asyncio.to_thread(os.pread, fd, min(4 * CHUNK, size - pos), pos)
        if not piece:
            break
        pos += len(piece)
        yield piece
