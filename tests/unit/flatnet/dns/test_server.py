"""DNS answers from the zone, forwarding with a timeout, over UDP and TCP (loopback sockets)."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, A, DNSRecord, EDNSOption

from agentkit.buckets import TokenBuckets
from agentkit.fairness.connections import ConnectionTable
from agentkit.model import DnsRecord
from flatnet.dns.endpoint import DnsEndpoint, DnsLimits
from flatnet.dns.server import DnsResponder
from flatnet.dns.zone import Zone

RECORDS = [DnsRecord(l3_uuid="l3", name="Web 1", ip="198.18.4.10"),
           DnsRecord(l3_uuid="l3", name="db", ip="198.18.4.11"),
           DnsRecord(l3_uuid="l3", name="bad", ip="not-an-ip")]


def ask(responder: DnsResponder, name: str, qtype: str = "A") -> DNSRecord:
    query, answer = responder.local(DNSRecord.question(name, qtype).pack())
    assert answer is not None
    return DNSRecord.parse(answer)


def test_zone_answers_a_and_ptr_case_insensitively():
    r = DnsResponder(Zone("Cloud.Test.", RECORDS), [])
    reply = ask(r, "WEB-1.cloud.test")
    assert [str(rr.rdata) for rr in reply.rr] == ["198.18.4.10"] and reply.header.aa
    assert [str(rr.rdata) for rr in ask(r, "10.4.18.198.in-addr.arpa", "PTR").rr] == ["web-1.cloud.test."]
    assert ask(r, "db.cloud.test", "AAAA").rr == []  # NODATA, not forwarded
    assert r.local(DNSRecord.question("bad.cloud.test").pack())[1] is None  # bad record skipped -> forwarded


def test_questions_not_ours_are_forwarded_and_garbage_dropped():
    r = DnsResponder(Zone("cloud.test", RECORDS), [])
    query, answer = r.local(DNSRecord.question("example.net").pack())
    assert query is not None and answer is None
    assert r.local(b"\x00\x01garbage") == (None, None)
    assert r.stats["malformed"] == 1


class Upstream(asyncio.DatagramProtocol):
    """A fake upstream resolver: example.net -> 203.0.113.7."""

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(answer(data), addr)


def answer(data: bytes) -> bytes:
    q = DNSRecord.parse(data)
    reply = q.reply()
    reply.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("203.0.113.7"), ttl=5))
    return reply.pack()


async def tcp_upstream(reader, writer):
    (size,) = struct.unpack("!H", await reader.readexactly(2))
    out = answer(await reader.readexactly(size))
    writer.write(struct.pack("!H", len(out)) + out)
    await writer.drain()
    writer.close()


@pytest.fixture
async def upstream():
    """UDP and TCP on one port: a free UDP port whose TCP twin may be another process's, so try again."""
    loop = asyncio.get_running_loop()
    while True:
        transport, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            server = await asyncio.start_server(tcp_upstream, "127.0.0.1", port)
            break
        except OSError:
            transport.close()
    yield port
    transport.close()
    server.close()


async def test_forwarding_udp_tcp_and_timeout(upstream):
    r = DnsResponder(Zone("cloud.test", RECORDS), ["127.0.0.1"], timeout=0.5, upstream_port=upstream)
    query = DNSRecord.question("example.net")
    for tcp in (False, True):
        reply = DNSRecord.parse(await r.forward(query, query.pack(), tcp=tcp))
        assert [str(rr.rdata) for rr in reply.rr] == ["203.0.113.7"]
    dead = DnsResponder(Zone(None, []), ["127.0.0.1"], timeout=0.3, upstream_port=9)
    reply = DNSRecord.parse(await dead.forward(query, query.pack(), tcp=False))
    assert reply.header.rcode == RCODE.SERVFAIL and dead.stats["servfail"] == 1


async def test_endpoint_serves_udp_and_tcp(upstream):
    udp, tcp = sockets()
    r = DnsResponder(Zone("cloud.test", RECORDS), ["127.0.0.1"], timeout=1, upstream_port=upstream)
    endpoint = DnsEndpoint(udp, tcp, r)
    await endpoint.start()
    try:
        loop = asyncio.get_running_loop()
        for name, want in (("web-1.cloud.test", "198.18.4.10"), ("example.net", "203.0.113.7")):
            data = await loop.run_in_executor(None, udp_query, udp.getsockname(), name)
            assert [str(rr.rdata) for rr in DNSRecord.parse(data).rr] == [want]
            reader, writer = await asyncio.open_connection(*tcp.getsockname())
            q = DNSRecord.question(name).pack()
            writer.write(struct.pack("!H", len(q)) + q)
            (size,) = struct.unpack("!H", await reader.readexactly(2))
            assert [str(rr.rdata) for rr in DNSRecord.parse(await reader.readexactly(size)).rr] == [want]
            writer.close()
    finally:
        await endpoint.close()


def sockets() -> tuple[socket.socket, socket.socket]:
    """An endpoint's UDP and listening TCP socket on loopback."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    udp.setblocking(False)
    tcp.setblocking(False)
    return udp, tcp


def udp_query(addr, name: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(DNSRecord.question(name).pack(), addr)
        return s.recv(4096)


def test_mangled_queries_never_raise():
    rng = random.Random(53)
    r = DnsResponder(Zone("cloud.test", RECORDS), [])
    base = bytearray(DNSRecord.question("web-1.cloud.test").pack())
    for _ in range(5000):
        d = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            d[rng.randrange(len(d))] = rng.randrange(256)
        r.local(bytes(d[: rng.randrange(len(d) + 1)]))
    assert r.stats["errors"] == 0 and r.stats["malformed"] > 0


async def test_each_source_gets_its_share_of_queries_forwards_and_tcp_connections(upstream):
    udp, tcp = sockets()
    r = DnsResponder(Zone("cloud.test", RECORDS), ["127.0.0.1"], timeout=1, upstream_port=upstream)
    limits = DnsLimits(TokenBuckets(10, burst=20), forwards_per_source=2, forwards=100,
                       tcp=ConnectionTable(100, 2))
    endpoint = DnsEndpoint(udp, tcp, r, limits)
    await endpoint.start()
    loop = asyncio.get_running_loop()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
            for _ in range(200):  # from one source, faster than its rate: beyond the burst, dropped unread
                flood.sendto(DNSRecord.question("web-1.cloud.test").pack(), udp.getsockname())
            async with asyncio.timeout(5):
                while r.stats["rate_limited"] + r.stats["local"] < 200:
                    await asyncio.sleep(0.01)
        assert r.stats["rate_limited"] >= 150 and r.stats["local"] <= 50
        conns = [await asyncio.open_connection(*tcp.getsockname()) for _ in range(3)]
        await asyncio.sleep(0.1)
        assert await asyncio.wait_for(conns[0][0].read(), 5) == b""  # the idlest of three from one source went
        assert r.stats["tcp_evicted"] == 1
        for _, writer in conns:
            writer.close()
        await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # a token again
        data = await loop.run_in_executor(None, udp_query, udp.getsockname(), "example.net")  # forwarded still
        assert [str(rr.rdata) for rr in DNSRecord.parse(data).rr] == ["203.0.113.7"]
    finally:
        await endpoint.close()


def test_an_l3_that_may_not_forward_refuses_questions_outside_its_zone():
    r = DnsResponder(Zone("cloud.test", RECORDS), ["192.0.2.53"])
    r.forwarding = False
    assert DNSRecord.parse(r.local(DNSRecord.question("example.net").pack())[1]).header.rcode == RCODE.REFUSED
    assert [str(rr.rdata) for rr in ask(r, "db.cloud.test").rr] == ["198.18.4.11"]
    assert r.stats["not_forwarded"] == 1


async def test_connections_evicted_before_they_were_ever_served_are_closed():
    udp, tcp = sockets()
    endpoint = DnsEndpoint(udp, tcp, DnsResponder(Zone(None, []), []), DnsLimits(tcp=ConnectionTable(100, 1)))
    await endpoint.start()
    clients = [socket.create_connection(tcp.getsockname()) for _ in range(10)]  # one accept burst
    try:
        for client in clients[:-1]:  # read off the loop, which serves meanwhile however slowly the machine runs it
            client.settimeout(5)
            assert await asyncio.to_thread(client.recv, 1) == b""  # closed by the server, not left half-open
    finally:
        for client in clients:
            client.close()
        await endpoint.close()


def chained_pointers(depth: int, extra: int) -> bytes:
    """A message whose names chain by compression pointer, `depth` deep, then `extra` names at its end."""
    body, starts = bytearray(b"\x01a\x00\x00\x01\x00\x01"), [12]
    for _ in range(depth):
        starts.append(12 + len(body))
        body += b"\x01a" + struct.pack("!H", 0xC000 | starts[-2]) + b"\x00\x01\x00\x01"
    body += (struct.pack("!H", 0xC000 | starts[-1]) + b"\x00\x01\x00\x01") * extra
    return struct.pack("!6H", 1, 0x0100, 1 + depth + extra, 0, 0, 0) + bytes(body)


def test_messages_no_client_sends_are_dropped_at_once_and_never_raise():
    """A 25 KB message of chained pointers held the loop every L3 shares for 17 s of dnslib; a name over
    253 characters parsed, then raised out of the endpoint when its refusal was packed."""
    r = DnsResponder(Zone("cloud.test", RECORDS), [])
    r.forwarding = False
    long_name = (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01"
    header = struct.Struct("!6H")
    started = time.monotonic()
    for message in (chained_pointers(900, 3000),
                    header.pack(1, 0x0100, 1, 0, 0, 0) + long_name,  # would be REFUSED: not forwarded
                    header.pack(1, 0x8100, 1, 0, 0, 0) + long_name,  # would be FORMERR: a response
                    header.pack(1, 0x0100, 2, 0, 0, 0) + long_name[-5:] * 2):
        assert r.local(message) == (None, None)
    assert time.monotonic() - started < 1
    assert r.stats["malformed"] == 4 and r.stats["errors"] == 0
    edns = DNSRecord.question("db.cloud.test")
    edns.add_ar(EDNS0(opts=[EDNSOption(10, b"")] * 117))  # 510 bytes: answered, its options never read
    assert [str(rr.rdata) for rr in DNSRecord.parse(r.local(edns.pack())[1]).rr] == ["198.18.4.11"]
