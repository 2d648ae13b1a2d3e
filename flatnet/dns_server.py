"""The DNS server of one L3 namespace (dnslib): names of the L3's VMs, everything else forwarded.

Every VM NIC of the L3, on any host, has an A record `<vm name>.<l3 domain>` and the matching PTR;
other questions go to the L3's DNS servers from the agent's own namespace (the flat namespace has no
route out), over the transport the client used, with a timeout. The zone is swapped in by assignment.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections import Counter, defaultdict
from collections.abc import Iterable

from dnslib import PTR, QTYPE, RCODE, RR, A, DNSRecord

from agentkit.model import DnsRecord
from flatnet.names import fqdn

log = logging.getLogger(__name__)
PORT = 53
TTL = 60
_MAX_PENDING = 512
_TCP_IDLE = 10.0
_LEN = struct.Struct("!H")


class Zone:
    """A and PTR data of one L3: lower-case names without the trailing dot."""

    def __init__(self, domain: str | None, records: Iterable[DnsRecord]):
        self.forward: dict[str, list[str]] = defaultdict(list)
        self.reverse: dict[str, list[str]] = defaultdict(list)
        for rec in records:
            try:
                ip = ipaddress.IPv4Address(rec.ip)
            except ValueError:
                log.error("DNS record with a bad address skipped", extra={"fields": {"name": rec.name, "ip": rec.ip}})
                continue
            name = fqdn(rec.name, domain)
            self.forward[name].append(str(ip))
            self.reverse[ip.reverse_pointer].append(name)

    def answer(self, query: DNSRecord) -> DNSRecord | None:
        """The local answer, or None when the question is not ours (then it is forwarded)."""
        q = query.q
        name = str(q.qname).rstrip(".").lower()
        if name in self.forward:
            reply = query.reply()
            if q.qtype in (QTYPE.A, QTYPE.ANY):
                for ip in self.forward[name]:
                    reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(ip), ttl=TTL))
            return reply  # other types of a VM name: NODATA, never forwarded
        if q.qtype == QTYPE.PTR and name in self.reverse:
            reply = query.reply()
            for target in self.reverse[name]:
                reply.add_answer(RR(q.qname, QTYPE.PTR, rdata=PTR(target + "."), ttl=TTL))
            return reply
        return None


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
                ask = _ask_tcp if tcp else _ask_udp
                answer = await asyncio.wait_for(ask(server, self.upstream_port, data), budget)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                log.debug("upstream DNS %s failed: %r", server, e)
                continue
            self.stats["forwarded"] += 1
            return answer
        self.stats["servfail"] += 1
        reply = query.reply()
        reply.header.rcode = RCODE.SERVFAIL
        return reply.pack()


class _OneShot(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def _ask_udp(server: str, port: int, data: bytes) -> bytes:
    transport, proto = await asyncio.get_running_loop().create_datagram_endpoint(
        _OneShot, remote_addr=(server, port))
    try:
        transport.sendto(data)
        return await proto.answer
    finally:
        transport.close()


async def _ask_tcp(server: str, port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(server, port)
    try:
        writer.write(_LEN.pack(len(data)) + data)
        (size,) = _LEN.unpack(await reader.readexactly(2))
        return await reader.readexactly(size)
    finally:
        writer.close()


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, responder: DnsResponder, tasks: set[asyncio.Task]):
        self.responder = responder
        self.tasks = tasks
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        query, answer = self.responder.local(data)
        if answer is not None:
            self.transport.sendto(answer, addr)
        elif query is not None and len(self.tasks) < _MAX_PENDING:
            task = asyncio.ensure_future(self._forward(query, data, addr))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _forward(self, query: DNSRecord, data: bytes, addr) -> None:
        answer = await self.responder.forward(query, data, tcp=False)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(answer, addr)


class DnsEndpoint:
    """UDP and TCP port 53 of one namespace address, served from the event loop."""

    def __init__(self, udp: socket.socket, tcp: socket.socket, responder: DnsResponder):
        self._udp_sock, self._tcp_sock = udp, tcp
        self.responder = responder
        self._tasks: set[asyncio.Task] = set()
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
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            while True:
                (size,) = _LEN.unpack(await asyncio.wait_for(reader.readexactly(2), _TCP_IDLE))
                data = await asyncio.wait_for(reader.readexactly(size), _TCP_IDLE)
                query, answer = self.responder.local(data)
                if query is None:
                    return
                if answer is None:
                    answer = await self.responder.forward(query, data, tcp=True)
                writer.write(_LEN.pack(len(answer)) + answer)
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
