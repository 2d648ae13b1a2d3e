"""Where image bytes come from: an HTTP(S) URL, read from an offset with `Range`, or a file:// URL below
the configured roots (agentkit.confined: no symlink is followed, the check is the open).

`open(url, offset, validator)` connects and answers a `Body`: the bytes from `body.start` on. A source
that cannot resume (no Range support, or it changed: `If-Range` with the validator seen first) starts
over at 0, and the caller starts over with it. `Interrupted` is a broken transfer worth resuming;
`SourceFailed` is final. URLs appear in messages without credentials or query.

Bodies are read with blocking calls from one worker thread (`readinto` straight into the caller's
buffer: no allocation, no event loop per packet), which is what lets a download keep up with `curl`;
`abort()` from another thread ends a read in progress.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import re
import socket
import ssl
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from agentkit import __version__
from agentkit.addr import check_source_url, display_url
from agentkit.confined import Refused, open_beneath, resolve_roots
from imagestore.errors import SourceFailed, UrlRefused

CHUNK = 1 << 20
MAX_REDIRECTS = 5
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
REDIRECTS = {301, 302, 303, 307, 308}
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class Interrupted(Exception):
    """The transfer broke off (connection lost, timeout, a 5xx): resume it."""


class Body:
    """The source's bytes from `start` on; `total` is the whole size when known. This base class is the
    empty body (a source that already gave everything); subclasses read."""

    def __init__(self, start: int, total: int | None, validator: str | None):
        self.start, self.total, self.validator = start, total, validator

    def readinto(self, buf: memoryview) -> int:
        """Fill `buf` with the next bytes; 0 at the end. Interrupted when the transfer breaks."""
        return 0

    def abort(self) -> None:
        """From another thread: make a read in progress (and every later one) end."""

    def close(self) -> None:
        """Release the connection or file (once nothing reads any more)."""


class HttpBody(Body):
    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, shown: str, start: int,
                 total: int | None, validator: str | None):
        super().__init__(start, total, validator)
        self.conn, self.resp, self.shown = conn, resp, shown

    def readinto(self, buf: memoryview) -> int:
        try:
            return self.resp.readinto(buf)
        except (OSError, http.client.HTTPException, ValueError) as e:  # ValueError: read after abort()
            raise Interrupted(f"GET {self.shown}: {type(e).__name__}: {e}") from e

    def abort(self) -> None:
        if self.conn.sock is not None:
            with contextlib.suppress(OSError):
                self.conn.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.resp.close()  # the response holds the socket open too (makefile)
        self.conn.close()


class FileBody(Body):
    def __init__(self, fd: int, start: int, total: int, validator: str):
        super().__init__(start, total, validator)
        self.fd, self.pos = fd, start

    def readinto(self, buf: memoryview) -> int:
        n = os.preadv(self.fd, [buf], self.pos)
        self.pos += n
        return n

    def close(self) -> None:
        os.close(self.fd)


class Sources:
    def __init__(self, file_roots: Sequence[str | Path], read_timeout: float = 300, connect_timeout: float = 30):
        self.file_roots = resolve_roots(file_roots)
        self.read_timeout, self.connect_timeout = read_timeout, connect_timeout
        self.tls = ssl.create_default_context()

    def check(self, url: str) -> None:
        """Refuse at once what can never be read: a URL the coordinator would refuse (agentkit.addr), a file://
        URL where it is disabled or not allowed, and upload:// (what the store records for uploaded images:
        their bytes come with the upload)."""
        if url.startswith("upload:"):
            raise UrlRefused(field="url", reason="upload:// names an uploaded image; upload its data instead")
        try:
            parts = urlsplit(check_source_url(url))
        except ValueError as e:
            raise UrlRefused(field="url", reason=str(e)) from None
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise UrlRefused(field="url", reason=f"file:// URLs name no host: {display_url(url)}")
            try:
                os.close(open_beneath(self.file_roots, unquote(parts.path)))
            except Refused as e:
                raise UrlRefused(field="url", reason=str(e)) from None

    def open(self, url: str, offset: int, validator: str | None) -> Body:
        """The source from `offset` (blocking: call it from a worker thread)."""
        if urlsplit(url).scheme == "file":
            return self._file(url, offset, validator)
        return self._http(url, offset, validator)

    def _file(self, url: str, offset: int, validator: str | None) -> Body:
        try:
            fd = open_beneath(self.file_roots, unquote(urlsplit(url).path))
        except Refused as e:
            raise SourceFailed(url=display_url(url), reason=str(e)) from None
        st = os.fstat(fd)
        seen = f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"
        return FileBody(fd, offset if seen == validator else 0, st.st_size, seen)

    def _http(self, url: str, offset: int, validator: str | None) -> Body:
        shown = display_url(url)
        for _ in range(MAX_REDIRECTS + 1):
            conn, resp = self._get(url, shown, offset, validator)
            location = resp.getheader("Location")
            if resp.status in REDIRECTS and location:
                resp.close()
                conn.close()
                url = _redirect(url, location, shown)
                continue
            try:
                return _body(conn, resp, shown, offset)
            except BaseException:
                resp.close()
                conn.close()
                raise
        raise SourceFailed(url=shown, reason=f"more than {MAX_REDIRECTS} redirects")

    def _get(self, url: str, shown: str, offset: int, validator: str | None
             ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        try:
            parts = urlsplit(url)
            host, port, timeout = parts.hostname or "", parts.port, self.connect_timeout
            conn = (http.client.HTTPSConnection(host, port, timeout=timeout, context=self.tls)
                    if parts.scheme == "https" else http.client.HTTPConnection(host, port, timeout=timeout))
        except (ValueError, http.client.InvalidURL) as e:  # checked when added, unless by an older release
            raise SourceFailed(url=shown, reason=f"{type(e).__name__}: {e}") from None
        headers = {"Accept-Encoding": "identity", "User-Agent": f"hoststack-imagestore/{__version__}"}
        if parts.username is not None:
            user_info = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(user_info).decode()
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if validator:
                headers["If-Range"] = validator
        try:
            conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers=headers)
            resp = conn.getresponse()
            if conn.sock is not None:
                conn.sock.settimeout(self.read_timeout)
        except (http.client.InvalidURL, UnicodeError) as e:  # a path or a host name no request can carry
            conn.close()
            raise SourceFailed(url=shown, reason=f"{type(e).__name__}: {e}") from None
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise Interrupted(f"GET {shown}: {type(e).__name__}: {e}") from e
        return conn, resp


def _redirect(url: str, location: str, shown: str) -> str:
    """Where a redirect leads: a URL the coordinator would take (agentkit.addr.check_source_url), http(s)
    only; SourceFailed naming the Location otherwise (a hostile server's header is no bug of ours)."""
    try:
        return check_source_url(urljoin(url, location), ("http", "https"))
    except ValueError as e:
        raise SourceFailed(url=shown, reason=f"redirected to {location[:200]!r}: {e}") from None


def _body(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, shown: str, offset: int) -> Body:
    """The response as a Body starting at `offset` (206) or at 0 (200); errors for anything else."""
    status = f"GET {shown}: HTTP {resp.status} {resp.reason or ''}".rstrip()
    if resp.status in RETRYABLE_STATUS:
        raise Interrupted(status)
    encoding = resp.getheader("Content-Encoding", "identity")
    if encoding.lower() != "identity":
        raise SourceFailed(url=shown, reason=f"the server sent {encoding}-encoded data")
    validator = _validator(resp)
    if resp.status == 200:
        return HttpBody(conn, resp, shown, 0, resp.length, validator)
    if resp.status == 206:
        m = _CONTENT_RANGE.match(resp.getheader("Content-Range", ""))
        if not m or int(m.group(1)) != offset:
            raise SourceFailed(url=shown, reason=f"asked for bytes from {offset}, got Content-Range "
                                                 f"{resp.getheader('Content-Range')!r}")
        return HttpBody(conn, resp, shown, offset, None if m.group(3) == "*" else int(m.group(3)), validator)
    if resp.status == 416 and resp.getheader("Content-Range") == f"bytes */{offset}":
        resp.close()
        conn.close()
        return Body(offset, offset, validator)  # everything was already here
    raise SourceFailed(url=shown, reason=status)


def _validator(resp: http.client.HTTPResponse) -> str | None:
    """What If-Range may carry (RFC 9110 13.1.5): a strong ETag, else a valid Last-Modified date."""
    etag = resp.getheader("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    modified = resp.getheader("Last-Modified")
    if modified:
        with contextlib.suppress(TypeError, ValueError):
            parsedate_to_datetime(modified)
            return modified
    return None
