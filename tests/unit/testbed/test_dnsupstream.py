"""testbed.dnsupstream: the upstream the DNS forwarding tests rely on answers example.net and nothing else."""

from __future__ import annotations

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from testbed.dnsupstream import ANSWER, ExampleNet


def ask(name: str, qtype: str = "A") -> DNSRecord:
    return ExampleNet().resolve(DNSRecord.question(name, qtype), None)


@pytest.mark.parametrize("name", ["example.net", "www.example.net", "A.Example.NET."])
def test_example_net_has_one_address(name):
    reply = ask(name)
    assert reply.header.rcode == RCODE.NOERROR
    assert [(QTYPE[rr.rtype], str(rr.rdata), rr.ttl) for rr in reply.rr] == [("A", ANSWER, 30)]


def test_other_types_of_example_net_exist_without_records():
    reply = ask("example.net", "AAAA")
    assert (reply.header.rcode, reply.rr) == (RCODE.NOERROR, [])


@pytest.mark.parametrize("name", ["example.org", "notexample.net", "example.net.evil"])
def test_anything_else_does_not_exist(name):
    reply = ask(name)
    assert (reply.header.rcode, reply.rr) == (RCODE.NXDOMAIN, [])
