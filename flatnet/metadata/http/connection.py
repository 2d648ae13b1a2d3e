"""One HTTP/1.1 connection to the metadata server: aiohttp's request parser in, pre-rendered bytes out.

Every answer comes from memory, so requests are answered synchronously and in order as their bytes
arrive. Requests are parsed by aiohttp's `HttpRequestParser` (llhttp, strict), which costs more than the
rest of a request's Python work; so a rendered reply is also kept per (caller, site), keyed by the exact bytes of the
request: the same bytes at a message boundary are the same request, answered the next time without
parsing, routing or rendering. That memo lives in the `Caller`, which every desired-state update
replaces, so an update is served from the next request on and a VM only ever finds its own entries; a
reply to a request bearing an IMDSv2 token is kept no longer than the token is valid. Identification is
never skipped: the connection is identified in the current snapshot before its memo is consulted, and a
refusal goes through the parser, so that its log line names the request.

A guest decides how many requests one read holds (thousands, pipelined) and whether it reads the
replies. So the received bytes are cut into requests at each end of headers (no API here takes a body)
and served a few at a time (`TURN`), each taking a token from the source's rate (`Driver.admit`); while
more than `pending_output` bytes are unsent, nothing more is served or read. What a guest sends beyond
that waits in its own socket buffers, not in the agent's memory. A request's line and headers may take
`MAX_HEAD` bytes (431 beyond): the parser keeps every header of a request until its end, and its own
caps (128 headers of 8 KiB) let one connection hold 2 MiB.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpProcessingError, HttpRequestParser, HttpVersion10, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD

from flatnet.metadata.http.routes import Request, Router
from flatnet.metadata.http.wire import Rendered, date_line, render
from flatnet.metadata.identity import Identifier, Peer
from flatnet.metadata.instance import Caller
from flatnet.metadata.store import Snapshot, Store
from flatnet.metadata.tokens import TokenSigner

MEMO_ENTRIES = 128  # replies kept per caller and site (a whole cloud-init crawl needs ~40)
MEMO_KEY_BYTES = 2048  # longer requests are answered but not kept
TURN = 16  # requests served from one connection before the others get their turn
MAX_HEAD = 8192  # bytes of one request's line and headers (cloud-init's take a few hundred)
_MEMO_METHODS = frozenset({"GET", "HEAD"})
_MEMO_STATUSES = frozenset({200, 404})
_READ_SIZE = 2**14
_END = b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Kept:
    """A rendered reply kept for identical request bytes, valid until `until` on the monotonic clock (the
    TokenSigner's: a token's expiry)."""

    reply: Rendered
    until: float


def _keep(kept: dict[bytes, Kept], key: bytes, entry: Kept) -> None:
    """Add to a memo; when it is full, replies to expired tokens make room, else the reply is not kept."""
    if len(kept) >= MEMO_ENTRIES:
        now = time.monotonic()
        for stale in [k for k, v in kept.items() if v.until <= now]:
            del kept[stale]
    if len(kept) < MEMO_ENTRIES:
        kept[key] = entry


class Driver(Protocol):
    """What a connection needs from the site that drives it (`site.Site`): what to answer with, the limits of
    its source, and the epoll set to tell what it waits for."""

    name: str  # the listening address: keys the memo
    loop: asyncio.AbstractEventLoop
    router: Router
    identifier: Identifier
    store: Store
    tokens: TokenSigner
    pending_output: int
    stats: Counter[str]

    def admit(self, conn: Connection) -> bool: ...

    def watch(self, conn: Connection, events: int) -> None: ...

    def again(self, conn: Connection) -> None: ...

    def run(self, conn: Connection, step: Callable[[], None]) -> None: ...

    def forget(self, conn: Connection) -> None: ...


class Connection(BaseProtocol):
    """A non-blocking socket driven by its `Site`: `readable()` / `writable()` when the site's epoll says so.

    It is an aiohttp `BaseProtocol` only so that the parser can pause on a request body (which is refused).
    `_kept` is the memo to consult for the next request, set only while the connection is identified
    in the snapshot `_snapshot` and the parser is at a message boundary."""

    def __init__(self, site: Driver, sock: socket.socket, peer_ip: str | None):
        super().__init__(site.loop)  # the parser is made on the first request that is not in the memo
        self.sock = sock
        self.peer_ip = peer_ip
        self.active = True  # a request since the last idle sweep
        self.events = select.EPOLLIN  # what the site's epoll set watches for
        self._site = site
        self._peer = Peer(peer_ip)
        self._snapshot: Snapshot | None = None
        self._caller: Caller | None = None
        self._kept: dict[bytes, Kept] | None = None
        self._boundary = True
        self._head = 0  # bytes of the request arriving, fed to the parser
        self._in = b""  # received, not yet served
        self._out = bytearray()  # what the socket did not take yet
        self._closing = False

    def readable(self) -> None:
        if self._in:  # a turn or a pause is pending: what was received is served first
            return
        try:
            data = self.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self._in = data
        self.serve()

    def writable(self) -> None:
        try:
            sent = self.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        del self._out[:sent]
        if not self._out:
            if self._closing:
                self.close()
            else:
                self.serve()

    def serve(self) -> None:
        """Serve a turn of the received requests, then tell the site what to wait for: the socket to take
        the output, more requests, or another turn. A source out of tokens is paused by `admit`."""
        site = self._site
        for _ in range(TURN):
            if not self._in or self._closing or len(self._out) >= site.pending_output:
                break
            end = self._in.find(_END)
            if end < 0:  # a request still arriving: the parser keeps its start
                data, self._in = self._in, b""
                if self._fits(data):
                    self._parse(data)
                break
            if not site.admit(self):
                return
            data, self._in = self._in[:end + len(_END)], self._in[end + len(_END):]
            if self._fits(data):
                self._head = 0
                self._request(data)
        if self.sock.fileno() < 0:
            return
        if self._out:
            site.watch(self, select.EPOLLOUT)
        elif self._in and not self._closing:
            site.again(self)
        else:
            site.watch(self, select.EPOLLIN)

    def resume(self) -> None:
        """Its source's turn came (it waited for tokens): serve on."""
        self._site.run(self, self.serve)

    def close(self) -> None:
        self._closing = True
        if self.sock.fileno() >= 0:
            self._site.forget(self)
            self.sock.close()

    def _fits(self, data: bytes) -> bool:
        """Whether the request arriving stays within `MAX_HEAD` with `data`; else it is refused (431)."""
        self._head += len(data)
        if self._head <= MAX_HEAD:
            return True
        self._refuse(web.HTTPRequestHeaderFieldsTooLarge(text=f"request line and headers over {MAX_HEAD} bytes"),
                     "too_large")
        return False

    def _request(self, data: bytes) -> None:
        """One whole request (`data` ends where its headers do): from the memo, else parsed and answered."""
        self.active = True  # bytes that never make a request (slowloris) do not keep the connection
        if self._boundary:
            kept = self._kept if self._site.store.snapshot is self._snapshot else self._recall()
            if kept is not None:
                hit = kept.get(data)
                if hit is not None and hit.until > time.monotonic():
                    self._site.stats["answered"] += 1
                    self._write(hit.reply)
                    return
        self._parse(data)

    def _recall(self) -> dict[bytes, Kept] | None:
        """Identify the connection in the current snapshot without a request at hand and return the caller's
        memo; None when not identified (the request is then parsed and refused with a log line)."""
        self._snapshot = self._site.store.snapshot
        found = self._site.identifier.find(self._peer)
        self._caller = found if isinstance(found, Caller) else None
        self._kept = self._memo(self._caller) if self._caller is not None else None
        return self._kept

    def _memo(self, caller: Caller) -> dict[bytes, Kept]:
        return caller.memo(("replies", self._site.name), dict)

    def _parse(self, data: bytes) -> None:
        """Feed the parser. Only a single whole request received at a message boundary becomes a memo key:
        anything else would also stand for the start of the next request."""
        self._kept = None
        at_boundary = self._boundary
        if self._parser is None:
            self._parser = HttpRequestParser(self, self._loop, _READ_SIZE)
        try:
            messages, upgraded, _tail = self._parser.feed_data(data)
        except HttpProcessingError as e:
            self._refuse(web.HTTPBadRequest(text=f"Bad Request: {e.message}"), "malformed")
            return
        whole = at_boundary and len(messages) == 1 and data.endswith(_END) and len(data) <= MEMO_KEY_BYTES
        key = data if whole else None
        for message, payload in messages:
            if payload is not EMPTY_PAYLOAD or upgraded:
                self._refuse(web.HTTPBadRequest(text="request bodies and protocol upgrades are not served"),
                             "malformed")
                return
            self._serve(message, key)
            if self._closing:
                return
        self._boundary = bool(messages) and data.endswith(_END)
        if self._boundary and self._caller is not None:
            self._kept = self._memo(self._caller)

    def _serve(self, message: RawRequestMessage, key: bytes | None) -> None:
        method, path, keep_alive = message.method, message.url.path, not message.should_close
        http10, head_only = message.version == HttpVersion10, method == "HEAD"
        try:
            caller = self._identify(method, path)
        except web.HTTPException as refusal:
            self._site.stats["refused"] += 1
            self._write(render(refusal, keep_alive=keep_alive, head_only=head_only, http10=http10))
            return
        site = self._site
        site.stats["answered"] += 1
        response, until = site.router.answer(Request(method, path, message.headers, caller, site.tokens))
        reply = render(response, keep_alive=keep_alive, head_only=head_only, http10=http10)
        self._write(reply)
        if key is not None and method in _MEMO_METHODS and response.status in _MEMO_STATUSES:
            _keep(self._memo(caller), key, Kept(reply, until))

    def _identify(self, method: str, path: str) -> Caller:
        snapshot = self._site.store.snapshot
        if snapshot is not self._snapshot or self._caller is None:
            self._caller = None
            self._snapshot = snapshot
            self._caller = self._site.identifier.identify(self._peer, method, path)
        return self._caller

    def _refuse(self, response: web.Response, stat: str) -> None:
        """An unparsable or unsupported request: counted as `stat`, answered, then the connection is closed."""
        self._site.stats[stat] += 1
        self._write(render(response, keep_alive=False, head_only=False, http10=False))

    def _write(self, reply: Rendered) -> None:
        """Send now; what the socket does not take waits in `_out` (appended in place: no copying of what is
        already there) for `writable`."""
        data = b"".join((reply.head, date_line(), reply.body))
        if reply.close:
            self._closing = True
        if self._out:
            self._out += data
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):
            self._out += memoryview(data)[sent:]
            self._site.watch(self, select.EPOLLOUT)
        elif self._closing:
            self.close()
