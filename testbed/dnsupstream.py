"""A tiny upstream DNS server (dnslib) for forwarding tests: `python -m testbed.dnsupstream [ADDRESS]`.

Answers A queries for `*.example.net` with 203.0.113.7 and NXDOMAIN for anything else, on UDP and TCP 53.
Names under `slow.example.net` are answered only after `SLOW` seconds: later than any forwarder waits, as a
black-holed upstream (or a guest's own slow authoritative server) would be.
"""

from __future__ import annotations

import sys
import time

from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import DNSHandler, DNSLogger, DNSServer

ANSWER = "203.0.113.7"
SLOW = 3.0


class ExampleNet:
    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if name.endswith("slow.example.net"):
            time.sleep(SLOW)
        if name == "example.net" or name.endswith(".example.net"):
            if request.q.qtype == QTYPE.A:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(ANSWER), ttl=30))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


if __name__ == "__main__":
    address = sys.argv[1] if len(sys.argv) > 1 else "0.0.0.0"
    quiet = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data")
    for tcp in (False, True):
        DNSServer(ExampleNet(), address=address, port=53, tcp=tcp, logger=quiet).start_thread()
    print("ready", flush=True)
    while True:
        time.sleep(3600)
