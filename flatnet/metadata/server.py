"""`MetadataService`: one metadata server per host, listening inside every L3 namespace with Userdata.

Per namespace it opens, inside that namespace, a socket on the metadata address:<port> (EC2 + OpenStack)
and one on the L3's DHCP address:<port> (CloudStack style). All answers come from memory: `update` swaps
the desired state in, served at once.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from agentkit.addr import METADATA_ADDRESS
from agentkit.buckets import TokenBuckets
from agentkit.fairness.connections import ConnectionTable
from agentkit.fairness.fdlimit import fd_share
from agentkit.model import L3Spec, VmSpec
from agentkit.netns import netns_socket
from flatnet.errors import MetadataError
from flatnet.metadata import flavours
from flatnet.metadata.flavours.base import Listen
from flatnet.metadata.http import imdsv2
from flatnet.metadata.http.connection import Connection
from flatnet.metadata.http.routes import Route, Router
from flatnet.metadata.http.site import Limits, Site
from flatnet.metadata.identity import Identifier
from flatnet.metadata.settings import MetadataSettings
from flatnet.metadata.store import Store
from flatnet.metadata.tokens import TokenSigner
from flatnet.plan import ServedL3

log = logging.getLogger(__name__)
_IP_FREEBIND = 15  # bind before the namespace's address exists; missing from Python's socket module
# the IMDSv2 token request on both addresses: every flavour takes tokens
IMDS_ROUTES: Sequence[Route] = (*imdsv2.ROUTES, *flavours.routes(Listen.METADATA_ADDRESS))
DATA_SERVER_ROUTES: Sequence[Route] = (*imdsv2.ROUTES, *flavours.routes(Listen.DHCP_ADDRESS))


def listen_socket(netns_name: str, address: str, port: int, ttl: int) -> socket.socket:
    """A listening TCP socket created inside `netns_name`; accepted connections inherit the reply TTL."""

    def setup(sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        sock.bind((address, port))
        sock.listen(1024)
        sock.setblocking(False)

    return netns_socket(netns_name, socket.AF_INET, socket.SOCK_STREAM, setup)


@dataclass
class _Namespace:
    netns: str
    identifier: Identifier
    limits: Limits
    sites: dict[str, Site] = field(default_factory=dict)  # by listening address

    async def close(self) -> None:
        for site in self.sites.values():
            site.close()
        self.sites.clear()


class MetadataService:
    """What the per-host composition drives: `update` on every desired-state change, namespaces as they come.

    It is a `flatnet.service.NamespacePlugin`: `FlatnetService(plugins=[MetadataService(settings)])` calls
    `attach`/`detach` as namespaces come and go, `update` after every apply, `close` on shutdown."""

    def __init__(self, settings: MetadataSettings | None = None):
        self.settings = settings or MetadataSettings()
        self._store = Store(self.settings)
        self._tokens = TokenSigner(self.settings.token_max_ttl)
        self._namespaces: dict[str, _Namespace] = {}
        total = self.settings.max_connections or fd_share(0.5)
        self._connections: ConnectionTable[Connection] = ConnectionTable(total, self.settings.connections_per_source)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per-L3 counters: connections held, requests delayed for their source's rate (`throttled`),
        connections closed to make room (`evicted`) or for want of descriptors (`shed`), `accept_errors`, requests
        refused for their size (`too_large`), shape (`malformed`) or caller (`refused`), `answered`."""
        return {l3_uuid: {**ns.limits.stats, "connections": sum(s.connections for s in ns.sites.values())}
                for l3_uuid, ns in self._namespaces.items()}

    async def update(self, l3s: dict[str, L3Spec], vms: dict[str, VmSpec]) -> None:
        """Serve this desired state (all L3s and this host's VMs, keyed by uuid or stream key) from the next
        request on; a changed DHCP address moves the CloudStack-style socket (failures are logged, retried)."""
        self._store.update(l3s, vms)
        for l3_uuid, ns in self._namespaces.items():
            l3 = self._store.l3(l3_uuid)
            if l3 is None:
                continue
            try:
                await self._sync(ns, l3.dhcp_address)
            except MetadataError as e:
                log.error("metadata not fully served: %s", e, extra={"fields": {"l3": l3_uuid}})

    async def attach(self, served: ServedL3, netns_name: str) -> None:
        """`FlatnetService` plugin hook: its namespace for `served.l3` is plugged."""
        await self.add_namespace(served.l3.uuid, netns_name, served.dhcp_address)

    async def detach(self, l3_uuid: str) -> None:
        """`FlatnetService` plugin hook: the namespace is about to be deleted."""
        await self.remove_namespace(l3_uuid)

    async def add_namespace(self, l3_uuid: str, netns_name: str, dhcp_address: str | None = None) -> None:
        """Listen in the L3's namespace (idempotent): on the metadata address and on the DHCP address (given, or
        the L3's in the last `update`). Raises MetadataError; a namespace that is half served stays
        registered and is completed by the next `update` or `add_namespace`."""
        ns = self._namespaces.get(l3_uuid)
        if ns is not None and ns.netns != netns_name:
            await self.remove_namespace(l3_uuid)
            ns = None
        if ns is None:
            identifier = Identifier(l3_uuid, netns_name, self._store)
            ns = self._namespaces[l3_uuid] = _Namespace(netns_name, identifier, self._limits(l3_uuid))
        l3 = self._store.l3(l3_uuid)
        await self._sync(ns, dhcp_address or (l3.dhcp_address if l3 else None))

    def _limits(self, l3_uuid: str) -> Limits:
        rate = self.settings.requests_per_second
        return Limits(l3_uuid, TokenBuckets(rate), self._connections, self.settings.pending_output)

    async def _sync(self, ns: _Namespace, dhcp_address: str | None) -> None:
        """Listen on exactly the metadata address and `dhcp_address` in `ns`."""
        want: dict[str, Sequence[Route]] = {METADATA_ADDRESS: IMDS_ROUTES}
        if dhcp_address:
            want[dhcp_address] = DATA_SERVER_ROUTES
        for address in [a for a in ns.sites if a not in want]:
            ns.sites.pop(address).close()
        for address, routes in want.items():
            if address not in ns.sites:
                ns.sites[address] = self._listen(ns, routes, address)
                log.info("metadata listening", extra={"fields": {"netns": ns.netns, "address": address}})

    def _listen(self, ns: _Namespace, routes: Sequence[Route], address: str) -> Site:
        try:
            sock = listen_socket(ns.netns, address, self.settings.port, self.settings.hop_limit)
        except OSError as e:
            raise MetadataError(f"cannot listen on {address}:{self.settings.port} in {ns.netns}: {e}") from e
        site = Site(address, Router(routes, imdsv2.check), ns.identifier, self._store, self._tokens, ns.limits)
        site.start(sock)
        return site

    async def remove_namespace(self, l3_uuid: str) -> None:
        """Stop listening in the L3's namespace (idempotent)."""
        ns = self._namespaces.pop(l3_uuid, None)
        if ns is not None:
            await ns.close()
            log.info("metadata stopped", extra={"fields": {"l3": l3_uuid, "netns": ns.netns}})

    async def close(self) -> None:
        for l3_uuid in list(self._namespaces):
            await self.remove_namespace(l3_uuid)
