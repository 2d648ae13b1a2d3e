"""DNS answers from the zone, forwarding with a timeout, over UDP and TCP (loopback sockets)."""

from __future__ import annotations

import asyncio
import random
import socket
import struct

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from agentkit.model import DnsRecord
from flatnet.dns.server import DnsEndpoint, DnsResponder
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
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    server = await asyncio.start_server(tcp_upstream, "127.0.0.1", port)
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
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    udp.setblocking(False)
    tcp.setblocking(False)
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
