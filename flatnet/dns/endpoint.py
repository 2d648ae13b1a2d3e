"""UDP and TCP port 53 of one namespace address, serving a `DnsResponder` fairly among the VMs.

Per source address (a VM NIC): queries take a token from its bucket (UDP over the rate is dropped, TCP
waits), forwarded queries in flight are capped (`forwards_per_source`, and `forwards` for the L3), and
TCP connections are held in a connection table with a cap per source and one for the service (the
idlest of the heaviest source makes room). So a VM flooding queries, holding TCP connections or asking
a black-holed upstream spends its own share only. Everything dropped is counted in the responder's stats.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from dnslib import RCODE, DNSRecord

from agentkit.buckets import TokenBuckets
from agentkit.dnsquery import LENGTH
from agentkit.fairness.accept import Acceptor
from agentkit.fairness.connections import ConnectionTable
from agentkit.fairness.ratelog import RateLimitedLog
from flatnet.dns.server import DnsResponder, Peer

log = logging.getLogger(__name__)
_ratelog = RateLimitedLog(log)
TCP_IDLE = 10.0


class TcpConnection:
    """One client's TCP connection: its serving task, cancelled to close it."""

    def __init__(self, sock: socket.socket, peer: str | None):
        self.sock = sock
        self.peer = peer
        self.task: asyncio.Task[None] | None = None

    def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        elif self.task is None:
            self.sock.close()


@dataclass
class DnsLimits:
    """Per source address: `queries` a second (both transports), forwarded queries in flight; TCP
    connections per source and in all (`tcp`, shared by every endpoint of the service)."""

    queries: TokenBuckets = field(default_factory=lambda: TokenBuckets(0))
    forwards_per_source: int = 512
    forwards: int = 512
    tcp: ConnectionTable[TcpConnection] = field(default_factory=lambda: ConnectionTable(512, 512))


class _Forwards:
    """Forwarded queries in flight, per source and in all."""

    def __init__(self, limits: DnsLimits, stats: Counter[str]):
        self.limits = limits
        self.stats = stats
        self.tasks: set[asyncio.Task[None]] = set()  # UDP forwards (TCP ones run in their connection's task)
        self._by_source: Counter[str] = Counter()
        self._total = 0

    def room(self, source: str) -> bool:
        in_flight = self._by_source[source]
        if self._total < self.limits.forwards and in_flight < self.limits.forwards_per_source:
            return True
        self.stats["forward_limited"] += 1
        _ratelog.log(logging.WARNING, source, "DNS forwarding share used up, query dropped",
                     fields={"src": source, "in_flight": in_flight})
        return False

    def start(self, source: str, work: Coroutine[Any, Any, None]) -> None:
        self._enter(source)
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(lambda t: self._finished(source, t))

    async def held(self, source: str, work: Callable[[], Coroutine[Any, Any, bytes]]) -> bytes:
        """Run `work` counted as one of `source`'s forwards (TCP: the connection's own task waits)."""
        self._enter(source)
        try:
            return await work()
        finally:
            self._leave(source)

    def _finished(self, source: str, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._leave(source)

    def _enter(self, source: str) -> None:
        self._by_source[source] += 1
        self._total += 1

    def _leave(self, source: str) -> None:
        self._total -= 1
        self._by_source[source] -= 1
        if self._by_source[source] <= 0:
            del self._by_source[source]


class _UdpServer(asyncio.DatagramProtocol):
    transport: asyncio.DatagramTransport  # set before the first datagram

    def __init__(self, responder: DnsResponder, limits: DnsLimits, forwards: _Forwards):
        self.responder = responder
        self.limits = limits
        self.forwards = forwards

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Peer) -> None:
        source = str(addr[0])
        if not self.limits.queries.take(source):  # before parsing: a flood costs a dict lookup per packet
            self.responder.stats["rate_limited"] += 1
            return
        query, answer = self.responder.local(data)
        if answer is not None:
            self.transport.sendto(answer, addr)
        elif query is not None and self.forwards.room(source):
            self.forwards.start(source, self._forward(query, data, addr))

    async def _forward(self, query: DNSRecord, data: bytes, addr: Peer) -> None:
        answer = await self.responder.forward(query, data, tcp=False)
        if not self.transport.is_closing():
            self.transport.sendto(answer, addr)


class DnsEndpoint:
    """UDP and TCP port 53 of one namespace address, served from the event loop."""

    def __init__(self, udp: socket.socket, tcp: socket.socket, responder: DnsResponder,
                 limits: DnsLimits | None = None):
        self._udp_sock = udp
        self.responder = responder
        self.limits = limits or DnsLimits()
        self._forwards = _Forwards(self.limits, responder.stats)
        self._acceptor: Acceptor | None = None
        self._tcp_sock = tcp
        self._conns: set[TcpConnection] = set()
        self._udp: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _UdpServer(self.responder, self.limits, self._forwards), sock=self._udp_sock)
        self._acceptor = Acceptor(self._tcp_sock, self._accepted, self.responder.stats,
                                  f"dns {self.responder.l3_uuid}", self._shed)
        self._acceptor.start()

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._acceptor is not None:
            self._acceptor.close()
        for conn in list(self._conns):
            conn.close()
        tasks = [*self._forwards.tasks, *(c.task for c in self._conns if c.task is not None)]
        for task in self._forwards.tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _accepted(self, sock: socket.socket, peer: str | None) -> None:
        sock.setblocking(False)
        conn = TcpConnection(sock, peer)
        self._conns.add(conn)
        victims = self.limits.tcp.admit((self.responder.l3_uuid, peer), conn)
        self.responder.stats["tcp_evicted"] += len(victims)
        for victim in victims:
            victim.close()
        conn.task = asyncio.ensure_future(self._serve_tcp(conn))
        conn.task.add_done_callback(lambda _: conn.sock.close())  # also when cancelled before it ever ran

    def _shed(self, count: int) -> int:
        victims = self.limits.tcp.shed(count)
        for victim in victims:
            victim.close()
        self.responder.stats["tcp_shed"] += len(victims)
        return len(victims)

    async def _serve_tcp(self, conn: TcpConnection) -> None:
        """Length-prefixed queries (RFC 7766) until the client closes, idles or is evicted."""
        source = str(conn.peer)
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_connection(sock=conn.sock)
            while True:
                (size,) = LENGTH.unpack(await asyncio.wait_for(reader.readexactly(2), TCP_IDLE))
                data = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE)
                while not self.limits.queries.take(source):
                    self.responder.stats["rate_limited"] += 1
                    await asyncio.sleep(self.limits.queries.wait(source))
                self.limits.tcp.touch(conn)
                answer = await self._answer(source, data)
                if answer is None:
                    return
                writer.write(LENGTH.pack(len(answer)) + answer)
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.discard(conn)
            self.limits.tcp.remove(conn)
            if writer is not None:
                writer.close()
            else:
                conn.sock.close()

    async def _answer(self, source: str, data: bytes) -> bytes | None:
        """The answer to one TCP query; None ends the connection (not DNS). Over the forwarding share, SERVFAIL."""
        query, answer = self.responder.local(data)
        if query is None or answer is not None:
            return answer
        if not self._forwards.room(source):
            reply = query.reply()
            reply.header.rcode = RCODE.SERVFAIL
            packed: bytes = reply.pack()
            return packed
        return await self._forwards.held(source, lambda: self.responder.forward(query, data, tcp=True))
