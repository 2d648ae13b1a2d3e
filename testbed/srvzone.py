"""A loopback DNS server answering SRV questions from a dict, for etcd discovery tests (dnslib).

`SrvZone({"_etcd-client._tcp.hs.test": [(priority, weight, port, "localhost")]})` serves those records
on UDP and TCP 127.0.0.1:`port`; any other name gets NXDOMAIN. `truncate=True` sets TC on UDP answers,
so clients must ask again over TCP.
"""

from __future__ import annotations

from dnslib import QTYPE, RCODE, RR, SRV, DNSRecord
from dnslib.server import DNSHandler, DNSLogger, DNSServer

from testbed.ports import free_port

Records = dict[str, list[tuple[int, int, int, str]]]


class _Resolver:
    def __init__(self, records: Records, truncate: bool):
        self.records = {k.rstrip(".").lower(): v for k, v in records.items()}
        self.truncate = truncate

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        found = self.records.get(str(request.q.qname).rstrip(".").lower())
        if found is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if self.truncate and handler.protocol == "udp":
            reply.header.tc = 1
            return reply
        if request.q.qtype == QTYPE.SRV:
            for priority, weight, port, target in found:
                reply.add_answer(RR(request.q.qname, QTYPE.SRV, ttl=30,
                                    rdata=SRV(priority=priority, weight=weight, port=port, target=target)))
        return reply


class SrvZone:
    def __init__(self, records: Records, truncate: bool = False):
        self.port = free_port()
        quiet = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data")
        resolver = _Resolver(records, truncate)
        self._servers = [DNSServer(resolver, address="127.0.0.1", port=self.port, tcp=tcp, logger=quiet)
                         for tcp in (False, True)]

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> SrvZone:
        for s in self._servers:
            s.start_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in self._servers:
            s.stop()
