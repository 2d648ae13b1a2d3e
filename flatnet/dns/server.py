"""The DNS server of one L3 namespace (dnslib): the L3's `Zone` answered, everything else forwarded.

`DnsResponder` is the protocol (wire bytes in, an answer or "forward this" out), `DnsEndpoint` serves
it on UDP and TCP port 53 of the namespace. Questions not in the zone go to the L3's DNS servers from
the agent's own namespace (the flat namespace has no route out), over the transport the client used,
with a timeout. The zone is swapped in by assignment: served from the next query on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from typing import Any, cast

from dnslib import RCODE, DNSRecord

from agentkit.dnsquery import LENGTH, ask_tcp, ask_udp
from flatnet.dns.zone import Zone

log = logging.getLogger(__name__)
PORT = 53
_MAX_PENDING = 512
_TCP_IDLE = 10.0
Peer = tuple[str | Any, int]  # a UDP peer as asyncio gives it


class DnsResponder:
    """Answers from the zone or from the upstream servers; returns wire bytes or None (drop)."""

    def __init__(self, zone: Zone, upstreams: list[str], timeout: float = 2.0, l3_uuid: str = "",
                 upstream_port: int = PORT):
        self.zone = zone
        self.upstreams = upstreams
        self.timeout = timeout
        self.upstream_port = upstream_port
        self.l3_uuid = l3_uuid
        self.stats: Counter[str] = Counter()

    def local(self, data: bytes) -> tuple[DNSRecord | None, bytes | None]:
        """(parsed query, answer) when answerable without the network; (query, None) to forward."""
        try:
            query = DNSRecord.parse(data)
        except Exception:  # dnslib raises assorted errors on garbage: all mean "not DNS"
            self.stats["malformed"] += 1
            return None, None
        if query.header.qr or query.header.opcode != 0 or len(query.questions) != 1:
            self.stats["refused"] += 1
            reply = query.reply()
            reply.header.rcode = RCODE.NOTIMP if query.header.opcode else RCODE.FORMERR
            return query, reply.pack()
        try:
            reply = self.zone.answer(query)
            answer = None if reply is None else reply.pack()
        except Exception:  # a bug or a name dnslib cannot re-encode: drop this query, keep serving
            self.stats["errors"] += 1
            log.exception("DNS query crashed the responder", extra={"fields": {"l3": self.l3_uuid}})
            return None, None
        self.stats["local" if answer is not None else "to_forward"] += 1
        return query, answer

    async def forward(self, query: DNSRecord, data: bytes, tcp: bool) -> bytes:
        """Ask each upstream in turn within the time budget; SERVFAIL when none answers."""
        budget = self.timeout / max(1, len(self.upstreams))
        for server in self.upstreams:
            try:
                ask = ask_tcp if tcp else ask_udp
                answer = await asyncio.wait_for(ask(server, self.upstream_port, data), budget)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                log.debug("upstream DNS %s failed: %r", server, e)
                continue
            self.stats["forwarded"] += 1
            return answer
        self.stats["servfail"] += 1
        reply = query.reply()
        reply.header.rcode = RCODE.SERVFAIL
        packed: bytes = reply.pack()
        return packed


class _UdpServer(asyncio.DatagramProtocol):
    transport: asyncio.DatagramTransport  # set before the first datagram

    def __init__(self, responder: DnsResponder, tasks: set[asyncio.Task[None]]):
        self.responder = responder
        self.tasks = tasks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Peer) -> None:
        query, answer = self.responder.local(data)
        if answer is not None:
            self.transport.sendto(answer, addr)
        elif query is not None and len(self.tasks) < _MAX_PENDING:
            task = asyncio.ensure_future(self._forward(query, data, addr))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _forward(self, query: DNSRecord, data: bytes, addr: Peer) -> None:
        answer = await self.responder.forward(query, data, tcp=False)
        if not self.transport.is_closing():
            self.transport.sendto(answer, addr)


class DnsEndpoint:
    """UDP and TCP port 53 of one namespace address, served from the event loop."""

    def __init__(self, udp: socket.socket, tcp: socket.socket, responder: DnsResponder):
        self._udp_sock, self._tcp_sock = udp, tcp
        self.responder = responder
        self._tasks: set[asyncio.Task[None]] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _UdpServer(self.responder, self._tasks), sock=self._udp_sock)
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=self._tcp_sock)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Length-prefixed queries (RFC 7766) until the client closes or idles."""
        task = cast("asyncio.Task[None]", asyncio.current_task())  # each connection has its own task
        self._tasks.add(task)
        try:
            while True:
                (size,) = LENGTH.unpack(await asyncio.wait_for(reader.readexactly(2), _TCP_IDLE))
                data = await asyncio.wait_for(reader.readexactly(size), _TCP_IDLE)
                query, answer = self.responder.local(data)
                if query is None:
                    return
                if answer is None:
                    answer = await self.responder.forward(query, data, tcp=True)
                writer.write(LENGTH.pack(len(answer)) + answer)
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()


def setup_udp(sock: socket.socket, address: str) -> None:
    sock.bind((address, PORT))
    sock.setblocking(False)


def setup_tcp(sock: socket.socket, address: str) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, PORT))
    sock.listen(64)
    sock.setblocking(False)
