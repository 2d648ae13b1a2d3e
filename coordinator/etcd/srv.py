"""DNS SRV discovery of etcd members, as etcd's own clients do it (`--discovery-srv`).

`_etcd-client-ssl._tcp.<domain>` lists members spoken to with TLS, `_etcd-client._tcp.<domain>` those
spoken to in the clear (with a service name: `_etcd-client-ssl-<name>._tcp.<domain>`). Both are asked;
the answer is every target, ordered by priority, then weight. Queries go over UDP to the nameservers of
/etc/resolv.conf (or the given `addr[:port]`s), and over TCP when the answer was truncated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from dnslib import QTYPE, RCODE, DNSRecord

from agentkit.dnsquery import ask_tcp, ask_udp
from coordinator.etcd.endpoints import Endpoint

QUERY_TIMEOUT = 2.0


class DiscoveryFailed(Exception):
    pass


def record_names(domain: str, service: str = "") -> list[tuple[str, bool]]:
    """The SRV names to ask, each with whether its members speak TLS."""
    suffix = f"-{service}" if service else ""
    return [(f"_etcd-client-ssl{suffix}._tcp.{domain}", True), (f"_etcd-client{suffix}._tcp.{domain}", False)]


def system_nameservers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    servers = []
    for line in resolv_conf.read_text().splitlines() if resolv_conf.exists() else []:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            servers.append(parts[1])
    return servers or ["127.0.0.1"]


async def discover(domain: str, service: str = "", nameservers: Sequence[str] = ()) -> list[Endpoint]:
    """The members the SRV records name; DiscoveryFailed when there are none or no server answered."""
    servers = list(nameservers) or system_nameservers()
    found: list[tuple[int, int, Endpoint]] = []
    for name, tls in record_names(domain, service):
        for priority, weight, port, target in await _query(name, servers):
            found.append((priority, -weight, Endpoint(target.rstrip("."), port, tls)))
    if not found:
        raise DiscoveryFailed(f"no SRV records for etcd under {domain}")
    return [e for *_, e in sorted(found, key=lambda f: (f[0], f[1]))]


async def _query(name: str, servers: Sequence[str]) -> list[tuple[int, int, int, str]]:
    question = DNSRecord.question(name, "SRV")
    last: Exception | None = None
    for server in servers:
        try:
            async with asyncio.timeout(QUERY_TIMEOUT):
                reply = DNSRecord.parse(await ask_udp(*_address(server), question.pack()))
                if reply.header.tc:
                    reply = DNSRecord.parse(await ask_tcp(*_address(server), question.pack()))
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as e:
            last = e
            continue
        if reply.header.rcode not in (RCODE.NOERROR, RCODE.NXDOMAIN):
            last = DiscoveryFailed(f"{server} answered {RCODE[reply.header.rcode]} for {name}")
            continue
        return [(rr.rdata.priority, rr.rdata.weight, rr.rdata.port, str(rr.rdata.target))
                for rr in reply.rr if rr.rtype == QTYPE.SRV]
    raise DiscoveryFailed(f"no nameserver answered for {name}: {last}")


def _address(server: str) -> tuple[str, int]:
    """`addr`, `addr:port` or `[v6addr]:port` (resolv.conf's bare IPv6 addresses too)."""
    if server.startswith("["):
        host, _, port = server[1:].partition("]:")
        return host, int(port or 53)
    if server.count(":") == 1:
        host, port = server.split(":")
        return host, int(port)
    return server, 53
