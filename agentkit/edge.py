"""The connections of an HTTP edge (every API port of ours): admitted at accept, bounded, fair.

aiohttp serves whatever asyncio accepts. One client opening connections without end (or holding them
half-spoken: aiohttp gives a request head 75 s, asyncio a TLS handshake 60) took the process's descriptors,
and then its own work failed for want of them (etcd, libvirt, files, a console's socket). Here each
listening socket is read by `agentkit.fairness.accept.Acceptor`, and every connection enters a
`ConnectionTable` at once, before its TLS handshake (which gets `HANDSHAKE_TIMEOUT`): at `limit`
connections, the least recently active one of the source holding the most is closed to make room (as
the metadata service does for guests), so a client that floods recycles its own and every other keeps
theirs; out of descriptors anyway, the same source pays. Counted for /metrics (`register`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from typing import cast

from aiohttp import web
from aiohttp.web_runner import BaseSite

from agentkit.fairness.accept import Acceptor
from agentkit.fairness.connections import ConnectionTable
from agentkit.fairness.fdlimit import fd_share
from agentkit.metrics import Registry
from agentkit.supervise import Supervisor

log = logging.getLogger(__name__)
HANDSHAKE_TIMEOUT = 10.0  # seconds a TLS client has to finish its handshake (asyncio's default is 60)
SHARE = 0.5  # of the descriptor limit (beyond a reserve), unless a process says otherwise
BACKLOG = 128  # aiohttp's own


class _Held(asyncio.Protocol):
    """One admitted connection: stands in front of aiohttp's protocol (made once the connection is up) to
    note its activity and its end. `close` cuts it off, its TLS handshake too."""

    def __init__(self, edge: Edge, factory: Callable[[], asyncio.Protocol]):
        self._edge = edge
        self._factory = factory
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Task[object] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are no subclasses of asyncio's
        self.inner = self._factory()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._edge.table.touch(self)
        assert self.inner is not None
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        assert self.inner is not None
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._edge.table.remove(self)
        assert self.inner is not None
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        assert self.inner is not None
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        assert self.inner is not None
        self.inner.resume_writing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # its descriptor back now, not once a peer that reads nothing took its bytes
        elif self.handshake is not None:
            self.handshake.cancel()


class Edge:
    """Every connection of one process's HTTP listeners: at most `limit` at once (a share of the descriptor
    limit unless given), TLS handshakes done here when `ssl_context` is given."""

    def __init__(self, limit: int | None = None, ssl_context: ssl.SSLContext | None = None):
        self.table: ConnectionTable[_Held] = ConnectionTable(limit or fd_share(SHARE), limit or fd_share(SHARE))
        self.ssl_context = ssl_context
        self.stats: Counter[str] = Counter()  # accept_errors, handshake_failures
        self.tasks = Supervisor()  # the connections being brought up; a bug there crashes the process

    def accepted(self, sock: socket.socket, source: str | None, factory: Callable[[], asyncio.Protocol]) -> None:
        """Admit `sock` from `source` (closing what makes room) and bring it up for `factory`'s protocol."""
        held = _Held(self, factory)
        for victim in self.table.admit(source, held):
            victim.close()
        held.handshake = self.tasks.start(self._connect(held, sock), f"connection from {source}")

    async def _connect(self, held: _Held, sock: socket.socket) -> None:
        """Bring `sock` up (its socket is closed when that fails) and hand it to `held`."""
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: held, sock, ssl=self.ssl_context,
                                               ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self.ssl_context else None)
        except (OSError, TimeoutError):  # the client went away, spoke no TLS or took too long: its own doing
            self.stats["handshake_failures"] += 1
            self.table.remove(held)
        except asyncio.CancelledError:  # closed to make room, or the edge is stopping
            self.table.remove(held)
            raise
        finally:
            held.handshake = None

    async def stop(self) -> None:
        """Cut off the handshakes under way (the sites stopped accepting)."""
        await self.tasks.stop()

    def shed(self, count: int) -> int:
        """Out of descriptors: close up to `count` connections, the heaviest sources' idlest first."""
        victims = self.table.shed(count)
        for victim in victims:
            victim.close()
        return len(victims)

    def register(self, registry: Registry) -> None:
        registry.gauge("hoststack_http_connections", "connections open to the API, and the most it keeps",
                       lambda: [(("open",), len(self.table)), (("limit",), self.table.total)], ("state",))
        registry.count("hoststack_http_connections_closed_total", "connections the API closed itself: to make room "
                       "for a newcomer or when out of descriptors (`evicted`, the heaviest source's idlest), in their "
                       "TLS handshake (`handshake_failed`), and accepts that failed (`accept_error`)",
                       lambda: [(("evicted",), self.table.evicted), (("handshake_failed",),
                                                                       self.stats["handshake_failures"]),
                                (("accept_error",), self.stats["accept_errors"])], ("reason",))


class EdgeSite(BaseSite):
    """A bound socket (agentkit.web.bound) served through `edge`: aiohttp's `SockSite` with the edge's accept."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, edge: Edge):
        super().__init__(runner, ssl_context=edge.ssl_context)
        self._sock = sock
        self._edge = edge
        self._acceptor: Acceptor | None = None

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"{'https' if self._edge.ssl_context else 'http'}://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._sock.setblocking(False)
        self._sock.listen(BACKLOG)
        self._acceptor = Acceptor(self._sock, lambda sock, source: self._edge.accepted(sock, source, server),
                                  self._edge.stats, self.name, self._edge.shed)
        self._acceptor.start()

    async def stop(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            self._acceptor = None
        await self._edge.stop()
        await super().stop()
