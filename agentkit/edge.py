"""The connections of an HTTP edge (every API port of ours): bounded and fair.

aiohttp serves whatever the loop accepts. One client opening connections without end (or holding them
half-spoken: aiohttp gives a request head 75 s) took the process's descriptors, and then its own work
failed for want of them (etcd, libvirt, files, a console's socket). Here each connection enters a
`ConnectionTable` once it is up (after its TLS handshake, which gets `HANDSHAKE_TIMEOUT` instead of
asyncio's 60 s): at `limit` connections, the least recently active one of the source holding the most is
closed to make room (as the metadata service does for guests), so a client that floods recycles its own
and every other keeps theirs. Counted for /metrics (`register`).

The loop itself accepts and runs the handshakes (`EdgeSite` is aiohttp's `SockSite` with a handshake limit
and the table's protocol in front of aiohttp's): no accept loop or handshake task of our own to get wrong.
Out of descriptors, the loop's own accept copes (uvloop closes what waits in the backlog; asyncio pauses).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import cast

from aiohttp import web
from aiohttp.web_runner import BaseSite

from agentkit.fairness.connections import ConnectionTable
from agentkit.fairness.fdlimit import fd_share
from agentkit.metrics import Registry

HANDSHAKE_TIMEOUT = 10.0  # seconds a TLS client has to finish its handshake (asyncio's default is 60)
SHARE = 0.5  # of the descriptor limit (beyond a reserve), unless a process says otherwise


class _Held(asyncio.Protocol):
    """One connection: stands in front of aiohttp's protocol to enter the table once the connection is up
    (a TLS one: once its handshake is done), note its activity, and leave the table at its end."""

    def __init__(self, edge: Edge, inner: asyncio.Protocol):
        self._edge = edge
        self.inner = inner
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are no subclasses of asyncio's
        peer = transport.get_extra_info("peername")
        self._edge.admit(peer[0] if isinstance(peer, tuple) else None, self)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._edge.table.touch(self)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._edge.table.remove(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def close(self) -> None:
        assert self.transport is not None  # in the table only once made
        self.transport.abort()  # its descriptor back now, not once a peer that reads nothing took its bytes


class Edge:
    """Every connection of one process's HTTP listeners: at most `limit` at once (a share of the descriptor
    limit unless given)."""

    def __init__(self, limit: int | None = None):
        self.table: ConnectionTable[_Held] = ConnectionTable(limit or fd_share(SHARE), limit or fd_share(SHARE))

    def protocol(self, factory: Callable[[], asyncio.Protocol]) -> asyncio.Protocol:
        """What the loop serves a new connection with: `factory`'s protocol behind the table's."""
        return _Held(self, factory())

    def admit(self, source: str | None, held: _Held) -> None:
        for victim in self.table.admit(source, held):
            victim.close()

    def register(self, registry: Registry) -> None:
        registry.gauge("hoststack_http_connections", "connections open to the API, and the most it keeps",
                       lambda: [(("open",), len(self.table)), (("limit",), self.table.total)], ("state",))
        registry.count("hoststack_http_connections_closed_total", "connections the API closed itself to make room "
                       "for a newcomer (`evicted`: the heaviest source's idlest)",
                       lambda: [(("evicted",), self.table.evicted)], ("reason",))


class EdgeSite(BaseSite):
    """A bound socket (agentkit.web.bound) served as aiohttp's `SockSite` serves it, with `edge`'s protocol in
    front of aiohttp's and a TLS handshake limit."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, edge: Edge, ssl_context: ssl.SSLContext | None):
        super().__init__(runner, ssl_context=ssl_context)
        self._sock = sock
        self._edge = edge

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"{'https' if self._ssl_context else 'http'}://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: self._edge.protocol(server), sock=self._sock, ssl=self._ssl_context, backlog=self._backlog,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self._ssl_context else None)
