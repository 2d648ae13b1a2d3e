"""One listening address of one namespace: accepts connections and serves all of them from one epoll set.

The agent's asyncio loop sees two file descriptors per site: the listening socket and the site's epoll
set. When the epoll set is readable, every ready connection is served in one pass, as lighttpd does,
rather than through one asyncio callback, transport and protocol dispatch per readable socket: that
dispatch alone cost 4 of 21 µs of CPU per request. Level-triggered: what the passes leave (beyond
`_ROUNDS` x `_PASS_EVENTS` connections) makes the set readable again, so other tasks of the loop run in
between. A connection waiting to send is not read from (backpressure); one without a request for a
whole `IDLE_SWEEP` period is closed.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket

from flatnet.metadata.http.connection import Connection
from flatnet.metadata.http.routes import Router
from flatnet.metadata.identity import Identifier
from flatnet.metadata.store import Store
from flatnet.metadata.tokens import TokenSigner

log = logging.getLogger(__name__)

IDLE_SWEEP = 60.0  # seconds
_PASS_EVENTS = 256  # connections served per pass
_ROUNDS = 4  # passes before the loop gets control back
_ACCEPTS = 64  # connections accepted per readiness of the listening socket


class Site:
    """The router, identifier and connections of one address; `start` with a bound, listening socket.

    It is the `connection.Driver` of its connections."""

    def __init__(self, name: str, router: Router, identifier: Identifier, store: Store, tokens: TokenSigner):
        self.name = name  # keys the memo: the same bytes mean different things on different addresses
        self.router = router
        self.identifier = identifier
        self.store = store
        self.tokens = tokens
        self.loop = asyncio.get_running_loop()
        self._epoll = select.epoll()
        self._listener: socket.socket | None = None
        self._connections: dict[int, Connection] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def start(self, listener: socket.socket) -> None:
        self._listener = listener
        self.loop.add_reader(listener.fileno(), self._accept)
        self.loop.add_reader(self._epoll.fileno(), self._serve_ready)
        self._sweeper = self.loop.call_later(IDLE_SWEEP, self._sweep)

    def close(self) -> None:
        """Stop listening and close every connection (replies not yet taken by the socket are dropped)."""
        if self._epoll.closed:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._listener is not None:
            self.loop.remove_reader(self._listener.fileno())
            self._listener.close()
        for conn in list(self._connections.values()):
            conn.close()
        self.loop.remove_reader(self._epoll.fileno())
        self._epoll.close()

    @property
    def connections(self) -> int:
        return len(self._connections)

    def want_read(self, conn: Connection) -> None:
        self._epoll.modify(conn.sock.fileno(), select.EPOLLIN)

    def want_write(self, conn: Connection) -> None:
        self._epoll.modify(conn.sock.fileno(), select.EPOLLOUT)

    def forget(self, conn: Connection) -> None:
        """Called by a connection about to close its socket."""
        fd = conn.sock.fileno()
        self._connections.pop(fd, None)
        self._epoll.unregister(fd)

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(_ACCEPTS):
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. out of file descriptors: the next readiness retries
                log.error("metadata accept failed: %s", e, extra={"fields": {"site": self.name}})
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, sock, peer[0] if peer else None)
            self._connections[sock.fileno()] = conn
            self._epoll.register(sock.fileno(), select.EPOLLIN)

    def _serve_ready(self) -> None:
        """Serve the ready connections, then those that became ready meanwhile (clients answer quickly), until
        none are or `_ROUNDS` passes are done: fewer sleeps and wake-ups of the loop under load."""
        for _ in range(_ROUNDS):
            ready = self._epoll.poll(0, _PASS_EVENTS)
            if not ready:
                return
            self._serve(ready)

    def _serve(self, ready: list[tuple[int, int]]) -> None:
        connections = self._connections
        for fd, events in ready:
            conn = connections.get(fd)
            if conn is None:
                continue
            try:
                if events & select.EPOLLOUT:
                    conn.writable()
                else:
                    conn.readable()
            except Exception:  # a bug must not stop the other connections: log it, drop this one
                log.exception("metadata connection failed", extra={"fields": {"site": self.name}})
                conn.close()

    def _sweep(self) -> None:
        for conn in list(self._connections.values()):
            if not conn.active:
                conn.close()
            conn.active = False
        self._sweeper = self.loop.call_later(IDLE_SWEEP, self._sweep)
