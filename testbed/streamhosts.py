"""Simulated hosts for scale tests: many registered hosts' desired-state streams in one process.

Each `StreamHost` is one host's `GET /v1/hosts/{uuid}/stream` on a raw asyncio protocol (HTTP/1.1,
chunked, as aiohttp serves it): cheap enough that a thousand fit on one core next to the coordinators.
It keeps the view as agentkit.link does and notes when each put key first arrived (the time the
bytes were handed to the process, before parsing), so a benchmark can time a write to its arrival.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit


class Arrivals:
    """Counts the hosts a key reached, and wakes whoever waits for `n` of them."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self._want: dict[str, tuple[int, asyncio.Event]] = {}

    def arrived(self, key: str) -> None:
        self.count[key] += 1
        want = self._want.get(key)
        if want and self.count[key] >= want[0]:
            want[1].set()

    async def wait(self, key: str, n: int, timeout: float) -> None:
        """Until `n` hosts have the key (TimeoutError after `timeout`: a lost change is a bug)."""
        if self.count[key] >= n:
            return
        event = asyncio.Event()
        self._want[key] = (n, event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        finally:
            del self._want[key]

    def forget(self, key: str) -> None:
        self.count.pop(key, None)


class StreamHost(asyncio.Protocol):
    """`context`: TLS verified with it (an https coordinator)."""

    def __init__(self, url: str, uuid: str, token: str, arrivals: Arrivals, context: ssl.SSLContext | None = None):
        self.uuid, self.arrivals, self.context = uuid, arrivals, context
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._request = (f"GET /v1/hosts/{uuid}/stream?since=0 HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                         f"Authorization: Bearer {token}\r\nAccept: application/x-ndjson\r\n\r\n").encode()
        self.view: dict[str, Any] = {}
        self.seen: dict[str, float] = {}  # put key -> first arrival (perf_counter)
        self.rev = 0
        self.lines = 0
        self.bytes = 0
        self.ready = asyncio.Event()  # the snapshot came
        self.closed = asyncio.Event()
        self._buf = bytearray()
        self._line = bytearray()
        self._headers = True
        self._transport: asyncio.Transport | None = None

    async def open(self) -> StreamHost:
        await asyncio.get_running_loop().create_connection(lambda: self, *self.address, ssl=self.context)
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def forget(self, key: str) -> None:
        self.seen.pop(key, None)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.bytes += len(data)
        self._buf += data
        if self._headers:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self._buf[:end]).split(b"\r\n", 1)[0]
            if b" 200 " not in status:
                raise RuntimeError(f"stream of host {self.uuid}: {status.decode()}")
            del self._buf[:end + 4]
            self._headers = False
        self._chunks(now)

    def _chunks(self, now: float) -> None:
        """Chunked transfer coding: `<hex size>\\r\\n<payload>\\r\\n`, a zero size ends the body."""
        while True:
            eol = self._buf.find(b"\r\n")
            if eol < 0:
                return
            size = int(self._buf[:eol], 16)
            if size == 0:
                self.close()
                return
            if len(self._buf) < eol + 2 + size + 2:
                return
            self._line += self._buf[eol + 2:eol + 2 + size]
            del self._buf[:eol + 2 + size + 2]
            *complete, rest = self._line.split(b"\n")
            self._line = bytearray(rest)
            for line in complete:
                self._apply(json.loads(line), now)

    def _apply(self, doc: dict[str, Any], now: float) -> None:
        self.lines += 1
        self.rev = doc["rev"]
        if doc["type"] == "snapshot":
            self.view = doc["items"]
            self.ready.set()
        elif doc["type"] == "changes":
            for key in doc["deletes"]:
                self.view.pop(key, None)
            for key, value in doc["puts"].items():
                self.view[key] = value
                if key not in self.seen:
                    self.seen[key] = now
                    self.arrivals.arrived(key)
