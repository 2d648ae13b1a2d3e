"""Who is asking: the VM NIC behind a connection, proven by namespace, source address and neighbour MAC.

The listening socket's namespace names the L3; the TCP peer address names the NIC on it (headers such as
X-Forwarded-For are never read). Anti-spoofing on the VM taps keeps a VM from sending with another
NIC's address; as a second, independent check the namespace's neighbour table must map the peer
address to that NIC's MAC, so a VM that took over an address by ARP gets 403, not the owner's data.
The MAC is read once per TCP connection (`Peer`): a connection cannot change hands without a new
handshake. The NIC is looked up again in every new desired-state snapshot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiohttp import web

from flatnet.fairness.ratelog import RateLimitedLog
from flatnet.metadata.instance import Caller
from flatnet.metadata.neighbours import NeighbourTable
from flatnet.metadata.store import Store

log = logging.getLogger(__name__)
_ratelog = RateLimitedLog(log)  # a guest's requests never become a log line each


@dataclass
class Peer:
    """The far end of one connection: its address, and its neighbour MAC once read (`looked_up`)."""

    ip: str | None
    mac: str | None = None
    looked_up: bool = False


@dataclass(frozen=True)
class Refusal:
    """Why a peer is not served: 404 (no metadata service on the L3) or 403 (not proven to be a VM NIC)."""

    status: int
    reason: str
    fields: dict[str, object] = field(default_factory=dict)


class Identifier:
    """Identification for one L3 namespace."""

    def __init__(self, l3_uuid: str, netns: str, store: Store, neighbours: NeighbourTable):
        self.l3_uuid = l3_uuid
        self.netns = netns
        self._store = store
        self._neighbours = neighbours

    def identify(self, peer: Peer, method: str, path: str) -> Caller:
        """The caller in the current snapshot; HTTPNotFound on an L3 without Userdata, HTTPForbidden (with a
        log line) if unproven. `method` and `path` are only logged."""
        found = self.find(peer)
        if isinstance(found, Caller):
            return found
        if found.status == 404:
            raise web.HTTPNotFound(text="no metadata service on this network")
        _ratelog.log(logging.WARNING, (self.l3_uuid, peer.ip, found.reason), "metadata request refused: %s",
                     found.reason, fields={"l3": self.l3_uuid, "netns": self.netns, "src": peer.ip, "method": method,
                                           "path": path, **found.fields})
        raise web.HTTPForbidden(text="Forbidden")

    def find(self, peer: Peer) -> Caller | Refusal:
        """`identify` without raising or logging: the caller, or why there is none."""
        if not self._store.serves(self.l3_uuid):
            return Refusal(404, "no Userdata service on this L3")
        if peer.ip is None:
            return Refusal(403, "connection has no peer address")
        caller = self._store.caller(self.l3_uuid, peer.ip)
        if caller is None:
            return Refusal(403, "no VM NIC with this address on this L3")
        if not peer.looked_up:
            self._look_up(peer)
        if peer.mac != caller.nic.mac:
            return Refusal(403, "neighbour MAC is not the NIC's", {"neighbour_mac": peer.mac, "nic": caller.nic.uuid})
        return caller

    def _look_up(self, peer: Peer) -> None:
        """Read the MAC once; a failed read is not remembered, the next request tries again."""
        try:
            peer.mac = self._neighbours.mac_of(peer.ip or "")
        except OSError as e:
            log.error("neighbour lookup failed: %s", e, extra={"fields": {"netns": self.netns, "ip": peer.ip}})
            return
        peer.looked_up = True
