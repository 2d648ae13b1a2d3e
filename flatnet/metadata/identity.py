"""Who is asking: the VM NIC behind a connection, named by the namespace and the source address.

The listening socket's namespace names the L3; the TCP peer address names the NIC on it (headers such as
X-Forwarded-For are never read). That address is an identity only because anti-spoofing on the VM taps
(`flatnet.antispoof`) keeps every VM to its own MAC and IP and cuts off every port it does not know:
the tap filter is the proof, and nothing here can add to it. The namespace's neighbour table cannot:
flatnet installs a permanent entry (the NIC's MAC) for every NIC address, so it always agrees; and
without those entries it would hold whatever MAC the guest answered ARP with (docs/metadata.md,
"Identity"). The NIC is looked up again in every new desired-state snapshot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from agentkit.fairness.ratelog import RateLimitedLog
from flatnet.metadata.instance import Caller
from flatnet.metadata.store import Store

log = logging.getLogger(__name__)
_ratelog = RateLimitedLog(log)  # a guest's requests never become a log line each


@dataclass(frozen=True)
class Peer:
    """The far end of one connection: its source address (None when the socket had none)."""

    ip: str | None


@dataclass(frozen=True)
class Refusal:
    """Why a peer is not served: 404 (no metadata service on the L3) or 403 (no VM NIC has its address)."""

    status: int
    reason: str


class Identifier:
    """Identification for one L3 namespace."""

    def __init__(self, l3_uuid: str, netns: str, store: Store):
        self.l3_uuid = l3_uuid
        self.netns = netns
        self._store = store

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
                                           "path": path})
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
        return caller
