"""The names of one L3's VMs as DNS data: A and PTR records, answered from memory.

Every VM NIC of the L3, on any host, has an A record `<hostname>.<l3 domain>` (the rule of
`flatnet.hostname`, shared with DHCP and metadata) and the matching PTR.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import defaultdict
from collections.abc import Iterable

from dnslib import PTR, QTYPE, RR, A, DNSRecord

from agentkit.model import DnsRecord
from flatnet.hostname import fqdn

log = logging.getLogger(__name__)
TTL = 60


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
