"""Who is asking: the VM NIC behind a connection, proven by namespace, source address and neighbour MAC.

The listening socket's namespace names the L3; the TCP peer address names the NIC on it (headers such as
X-Forwarded-For are never read). Anti-spoofing on the VM taps keeps a VM from sending with another
NIC's address; as a second, independent check the namespace's neighbour table must map the peer
address to that NIC's MAC, so a VM that took over an address by ARP gets 403, not the owner's data.
The MAC is read once per TCP connection: a connection cannot change hands without a new handshake.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable

from aiohttp import web

from flatnet.metadata.instance import Caller
from flatnet.metadata.keys import CALLER, IDENTIFIER
from flatnet.metadata.neighbours import NeighbourTable
from flatnet.metadata.store import Store

log = logging.getLogger(__name__)


class Identifier:
    """Identification for one L3 namespace."""

    def __init__(self, l3_uuid: str, netns: str, store: Store, neighbours: NeighbourTable):
        self.l3_uuid = l3_uuid
        self.netns = netns
        self._store = store
        self._neighbours = neighbours
        self._macs: weakref.WeakKeyDictionary[asyncio.BaseTransport, str | None] = weakref.WeakKeyDictionary()

    def identify(self, request: web.Request) -> Caller:
        """The caller; HTTPNotFound on an L3 without Userdata, HTTPForbidden (with a log line) if unproven."""
        if not self._store.serves(self.l3_uuid):
            raise web.HTTPNotFound(text="no metadata service on this network")
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport else None
        if transport is None or not peer:
            raise self._deny(request, None, "connection has no peer address")
        ip = peer[0]
        caller = self._store.caller(self.l3_uuid, ip)
        if caller is None:
            raise self._deny(request, ip, "no VM NIC with this address on this L3")
        mac = self._peer_mac(transport, ip)
        if mac != caller.nic.mac:
            raise self._deny(request, ip, "neighbour MAC is not the NIC's", neighbour_mac=mac, nic=caller.nic.uuid)
        return caller

    def _peer_mac(self, transport: asyncio.BaseTransport, ip: str) -> str | None:
        if transport not in self._macs:
            try:
                self._macs[transport] = self._neighbours.mac_of(ip)
            except OSError as e:
                log.error("neighbour lookup failed: %s", e, extra={"fields": {"netns": self.netns, "ip": ip}})
                return None
        return self._macs[transport]

    def _deny(self, request: web.Request, ip: str | None, reason: str, **fields: object) -> web.HTTPForbidden:
        log.warning("metadata request refused: %s", reason, extra={"fields": {
            "l3": self.l3_uuid, "netns": self.netns, "src": ip, "method": request.method, "path": request.path,
            **fields}})
        return web.HTTPForbidden(text="Forbidden")


@web.middleware
async def identity_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request[CALLER] = request.app[IDENTIFIER].identify(request)
    return await handler(request)
