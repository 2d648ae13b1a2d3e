"""One listening address of one namespace: accepts connections and serves all of them from one epoll set.

The agent's asyncio loop sees two file descriptors per site: the listening socket and the site's epoll
set. When the epoll set is readable, every ready connection is served in one pass, as lighttpd does,
rather than through one asyncio callback, transport and protocol dispatch per readable socket: that
dispatch alone cost 4 of 21 µs of CPU per request. Level-triggered: what the passes leave (beyond
`_ROUNDS` x `_PASS_EVENTS` connections) makes the set readable again, so other tasks of the loop run in
between. A connection waiting to send is not read from (backpressure); one without a request for a
whole `IDLE_SWEEP` period is closed.

Fairness (`Limits`, shared by the sites of one namespace): every request takes a token from its source
address's bucket, and a source without one is not served nor read from until it has one again; a
connection that used its turn (`connection.TURN` requests) waits until the others had theirs; the
connection table caps connections per source and in all, closing the idlest to make room.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from agentkit.buckets import TokenBuckets
from agentkit.fairness.accept import Acceptor
from agentkit.fairness.connections import ConnectionTable
from agentkit.fairness.ratelog import RateLimitedLog
from flatnet.fairness.throttle import Throttle
from flatnet.metadata.http.connection import Connection
from flatnet.metadata.http.routes import Router
from flatnet.metadata.identity import Identifier
from flatnet.metadata.store import Store
from flatnet.metadata.tokens import TokenSigner

log = logging.getLogger(__name__)
_ratelog = RateLimitedLog(log)

IDLE_SWEEP = 60.0  # seconds
_PASS_EVENTS = 256  # connections served per pass
_ROUNDS = 4  # passes before the loop gets control back
_GONE = select.EPOLLERR | select.EPOLLHUP


@dataclass
class Limits:
    """What the sites of one namespace share: the request rate of each source address (and the line its
    connections wait in), the service's connection table (keyed by (L3, address)) and the namespace's
    counters."""

    l3_uuid: str
    requests: TokenBuckets
    connections: ConnectionTable[Connection]
    pending_output: int
    stats: Counter[str] = field(default_factory=Counter)
    throttle: Throttle[Connection] = field(init=False)

    def __post_init__(self) -> None:
        self.throttle = Throttle(self.requests, Connection.resume)


class Site:
    """The router, identifier and connections of one address; `start` with a bound, listening socket.

    It is the `connection.Driver` of its connections."""

    def __init__(self, name: str, router: Router, identifier: Identifier, store: Store, tokens: TokenSigner,
                 limits: Limits):
        self.name = name  # keys the memo: the same bytes mean different things on different addresses
        self.router = router
        self.identifier = identifier
        self.store = store
        self.tokens = tokens
        self.limits = limits
        self.pending_output = limits.pending_output
        self.stats = limits.stats
        self.loop = asyncio.get_running_loop()
        self._epoll = select.epoll()
        self._acceptor: Acceptor | None = None
        self._connections: dict[int, Connection] = {}
        self._turns: list[Connection] = []
        self._sweeper: asyncio.TimerHandle | None = None

    def start(self, listener: socket.socket) -> None:
        self._acceptor = Acceptor(listener, self._accepted, self.limits.stats, self.name, self._shed)
        self._acceptor.start()
        self.loop.add_reader(self._epoll.fileno(), self._serve_ready)
        self._sweeper = self.loop.call_later(IDLE_SWEEP, self._sweep)

    def close(self) -> None:
        """Stop listening and close every connection (replies not yet taken by the socket are dropped)."""
        if self._epoll.closed:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._acceptor is not None:
            self._acceptor.close()
        for conn in list(self._connections.values()):
            conn.close()
        self.loop.remove_reader(self._epoll.fileno())
        self._epoll.close()

    @property
    def connections(self) -> int:
        return len(self._connections)

    def admit(self, conn: Connection) -> bool:
        """Take a token for one request of `conn`'s source; without one, `conn` waits in its source's line."""
        limits = self.limits
        if limits.throttle.admit(conn.peer_ip, conn):
            limits.connections.touch(conn)
            return True
        limits.stats["throttled"] += 1
        _ratelog.log(logging.WARNING, (limits.l3_uuid, conn.peer_ip), "metadata requests over the rate, delayed",
                     fields={"l3": limits.l3_uuid, "src": conn.peer_ip, "rate": limits.requests.rate})
        self.watch(conn, 0)
        return False

    def watch(self, conn: Connection, events: int) -> None:
        if conn.events != events:
            self._epoll.modify(conn.sock.fileno(), events)
            conn.events = events

    def again(self, conn: Connection) -> None:
        """`conn` used its turn with requests left: served again once the loop got round."""
        self.watch(conn, 0)
        if not self._turns:
            self.loop.call_soon(self._next_turns)
        self._turns.append(conn)

    def forget(self, conn: Connection) -> None:
        """Called by a connection about to close its socket."""
        fd = conn.sock.fileno()
        self._connections.pop(fd, None)
        self._epoll.unregister(fd)
        self.limits.connections.remove(conn)
        self.limits.throttle.forget(conn)

    def _accepted(self, sock: socket.socket, peer: str | None) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(self, sock, peer)
        self._connections[sock.fileno()] = conn
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        victims = self.limits.connections.admit((self.limits.l3_uuid, peer), conn)
        for victim in victims:
            victim.close()
        self.limits.stats["evicted"] += len(victims)

    def _shed(self, count: int) -> int:
        """Out of descriptors: close the idlest connections of the heaviest sources."""
        victims = self.limits.connections.shed(count)
        for victim in victims:
            victim.close()
        self.limits.stats["shed"] += len(victims)
        return len(victims)

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
            if events & _GONE and not events & select.EPOLLIN:  # reset: reported even to a paused connection
                conn.close()
            else:
                self.run(conn, conn.writable if events & select.EPOLLOUT else conn.readable)

    def _next_turns(self) -> None:
        turns, self._turns = self._turns, []
        for conn in turns:
            if conn.sock.fileno() >= 0:
                self.run(conn, conn.serve)

    def run(self, conn: Connection, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception:  # a bug must not stop the other connections: log it, drop this one
            _ratelog.log(logging.ERROR, ("bug", self.name), "metadata connection failed", exc_info=True,
                         fields={"site": self.name})
            conn.close()

    def _sweep(self) -> None:
        for conn in list(self._connections.values()):
            if not conn.active:
                conn.close()
            conn.active = False
        self._sweeper = self.loop.call_later(IDLE_SWEEP, self._sweep)
