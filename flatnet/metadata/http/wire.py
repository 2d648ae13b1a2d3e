"""An aiohttp `web.Response` as the HTTP/1.1 bytes the metadata server writes, rendered once and reused.

Handlers build ordinary aiohttp responses; rendering them here (instead of through aiohttp's writer, a
coroutine per response) lets a connection answer synchronously and keep the bytes for the next identical
request. Only the Date header changes between two writes of the same reply: it is the last header, so a
reply is `head + date_line() + body`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import formatdate

from aiohttp import hdrs, web
from aiohttp.http import SERVER_SOFTWARE

_OWN_HEADERS = {hdrs.CONTENT_TYPE.lower(), hdrs.CONTENT_LENGTH.lower(), hdrs.CONNECTION.lower(), hdrs.DATE.lower()}


@dataclass(frozen=True, slots=True)
class Rendered:
    """Status line and headers up to `Date: ` (`head`), then the body; `close` ends the connection after it."""

    head: bytes
    body: bytes
    close: bool


def render(response: web.Response, *, keep_alive: bool, head_only: bool, http10: bool) -> Rendered:
    """HEAD gets GET's headers without the body; HTTP/1.0 keep-alive is confirmed, as 1.0 clients need."""
    body = response.body if isinstance(response.body, bytes) else b""
    lines = [
        f"HTTP/1.1 {response.status} {response.reason}",
        f"Server: {SERVER_SOFTWARE}",
        f"Content-Type: {response.headers.get(hdrs.CONTENT_TYPE, 'application/octet-stream')}",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{name}: {value}" for name, value in response.headers.items() if name.lower() not in _OWN_HEADERS]
    if not keep_alive:
        lines.append("Connection: close")
    elif http10:
        lines.append("Connection: keep-alive")
    lines.append("Date: ")
    return Rendered("\r\n".join(lines).encode("latin-1"), b"" if head_only else body, not keep_alive)


class DateLine:
    """The value of the Date header and the blank line ending the headers, formatted once per second."""

    def __init__(self) -> None:
        self._second = 0
        self._line = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._line = now, formatdate(now, usegmt=True).encode() + b"\r\n\r\n"
        return self._line


date_line = DateLine()
