"""The DNS protocol of one L3 namespace (dnslib): the L3's `Zone` answered, everything else forwarded.

`DnsResponder` is the protocol (wire bytes in, an answer or "forward this" out); `flatnet.dns.endpoint`
serves it on UDP and TCP port 53 of the namespace. Questions not in the zone go to the L3's DNS servers
from the agent's own namespace (the flat namespace has no route out), over the transport the client
used, with a timeout; an L3 that may not forward (`forwarding = False`, the service's forwarding
policy) answers them REFUSED. The zone is swapped in by assignment: served from the next query on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from typing import Any

from dnslib import RCODE, DNSBuffer, DNSError, DNSHeader, DNSQuestion, DNSRecord

from agentkit.dnsquery import ask_tcp, ask_udp
from agentkit.fairness.ratelog import RateLimitedLog
from flatnet.dns.zone import Zone

log = logging.getLogger(__name__)
_ratelog = RateLimitedLog(log)
PORT = 53
_SO_RCVBUFFORCE = 33  # socket.SO_RCVBUFFORCE appears in Python 3.12
Peer = tuple[str | Any, int]  # a UDP peer as asyncio gives it
MAX_QUERY = 512  # bytes: a 255-byte name's question with an EDNS OPT (cookie, RFC 8467 padding) fits


class DnsResponder:
    """Answers from the zone or from the upstream servers; returns wire bytes or None (drop)."""

    def __init__(self, zone: Zone, upstreams: list[str], timeout: float = 2.0, l3_uuid: str = "",
                 upstream_port: int = PORT):
        self.zone = zone
        self.upstreams = upstreams
        self.timeout = timeout
        self.upstream_port = upstream_port
        self.l3_uuid = l3_uuid
        self.forwarding = True
        self.stats: Counter[str] = Counter()

    def local(self, data: bytes) -> tuple[DNSRecord | None, bytes | None]:
        """(parsed query, answer) when answerable without the network; (query, None) to forward."""
        try:
            query = _parse_query(data)
        except Exception:  # dnslib raises assorted errors on garbage: all mean "not DNS"
            self.stats["malformed"] += 1
            return None, None
        if query.header.qr or query.header.opcode != 0:
            self.stats["refused"] += 1
            reply = query.reply()
            reply.header.rcode = RCODE.NOTIMP if query.header.opcode else RCODE.FORMERR
            return query, reply.pack()
        try:
            reply = self.zone.answer(query)
            answer = None if reply is None else reply.pack()
        except Exception:  # a bug or a name dnslib cannot re-encode: drop this query, keep serving
            self.stats["errors"] += 1
            _ratelog.log(logging.ERROR, self.l3_uuid, "DNS query crashed the responder", exc_info=True,
                         fields={"l3": self.l3_uuid})
            return None, None
        if answer is None and not self.forwarding:
            self.stats["not_forwarded"] += 1
            reply = query.reply()
            reply.header.rcode = RCODE.REFUSED
            return query, reply.pack()
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


def _parse_query(data: bytes) -> DNSRecord:
    """The header and the one question of a query, all that is answered from (a forward sends the bytes as
    they came); DNSError when there is no such query in `data`.

    The work is bounded by reading no more: dnslib follows compression pointers in time quadratic in their
    chain (a 25 KB message of records pointing at each other took 17 s of the loop every L3 shares) and
    reads 120 EDNS options in 1 ms. Within `MAX_QUERY` bytes a name can hold no chain: a pointer hidden in
    its labels must be valid UTF-8 for dnslib, so it points past the 640th byte."""
    if len(data) > MAX_QUERY:
        raise DNSError(f"a query of {len(data)} bytes")
    buffer = DNSBuffer(data)
    header = DNSHeader.parse(buffer)
    if header.q != 1:
        raise DNSError(f"a query of {header.q} questions")
    question = DNSQuestion.parse(buffer)
    DNSBuffer().encode_name(question.qname)  # a name dnslib reads but cannot write (over 253 characters)
    return DNSRecord(header, [question])


def setup_udp(sock: socket.socket, address: str) -> None:
    """The queue of a socket every VM of the L3 shares: room for seconds of a guest's allowed rate, so a loop
    busy elsewhere does not turn one guest's flood into a neighbour's lost query."""
    sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 4 << 20)
    sock.bind((address, PORT))
    sock.setblocking(False)


def setup_tcp(sock: socket.socket, address: str) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, PORT))
    sock.listen(64)
    sock.setblocking(False)
