"""The DHCP responder of one L3 namespace: static reservations only, answered from memory.

`DhcpResponder` is the protocol (RFC 2131 §4.3): a pure function from a request to a reply and its
destination, so it is tested without sockets. `DhcpEndpoint` feeds it from a UDP socket created in
the namespace, draining bursts per event-loop wakeup. Reservations are swapped in by assignment: a
change is served from the next packet on, with nothing restarted.

Lease changes go to `on_lease(reservation, state)`: "bound" when a client is ACKed an address it was
not known to hold, "released" and "declined" when it says so. Renewals of a binding report nothing,
so a client renewing every few seconds costs no observed-state traffic (and the service coalesces and
debounces what is reported: `leasereports`).

Each reserved MAC has two token buckets (`DhcpLimits`): one for DISCOVER/REQUEST/INFORM, one for
RELEASE/DECLINE, so a flood of notices, even with a forged chaddr, never uses up a client's budget for
getting its lease. A request over its MAC's rate gets no answer (the client retransmits) and is counted
as `rate_limited`; log lines are rate-limited per cause.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agentkit.buckets import TokenBuckets
from agentkit.fairness.ratelog import RateLimitedLog
from flatnet.dhcp import codec as c
from flatnet.dhcp.leases import Reservation

log = logging.getLogger(__name__)
_ratelog = RateLimitedLog(log)
CLIENT_PORT, SERVER_PORT = 68, 67
BROADCAST = ("255.255.255.255", CLIENT_PORT)
_BURST = 256
_SO_RCVBUFFORCE = 33  # socket.SO_RCVBUFFORCE appears in Python 3.12
_NAK_TEXT = c.encode_options([(c.OPT_MESSAGE, b"address not reserved for this client")])

Reply = tuple[bytes, tuple[str, int]]
LeaseReport = Callable[[Reservation, str], None]  # (reservation, "bound" | "released" | "declined")


@dataclass
class DhcpLimits:
    """Messages answered per second per reserved MAC (0: no limit): `requests` are DISCOVER, REQUEST and
    INFORM, `notices` RELEASE and DECLINE."""

    requests: TokenBuckets = field(default_factory=lambda: TokenBuckets(0))
    notices: TokenBuckets = field(default_factory=lambda: TokenBuckets(0))

    @classmethod
    def per_second(cls, requests: float, notices: float) -> DhcpLimits:
        return cls(TokenBuckets(requests, max(4.0, 2 * requests)), TokenBuckets(notices, max(4.0, 5 * notices)))


class DhcpResponder:
    """Answers one L3's DHCP requests; unknown MACs get silence (other servers may own them)."""

    def __init__(self, server_ip: str, l3_uuid: str = "", on_lease: LeaseReport | None = None,
                 limits: DhcpLimits | None = None):
        self.server_id = c.ip_bytes(server_ip)
        self.l3_uuid = l3_uuid
        self.on_lease = on_lease
        self.limits = limits or DhcpLimits()
        self._reservations: Mapping[bytes, Reservation] = {}
        self._bound: dict[bytes, tuple[str, bytes]] = {}  # MAC -> (NIC, address) last reported bound
        self.stats: Counter[str] = Counter()
        self._nak_options = c.encode_options([(c.OPT_SERVER_ID, self.server_id)]) + _NAK_TEXT

    @property
    def reservations(self) -> Mapping[bytes, Reservation]:
        return self._reservations

    @reservations.setter
    def reservations(self, new: Mapping[bytes, Reservation]) -> None:
        """Swapped in whole. A MAC no longer reserved is forgotten as bound, so a NIC that takes it again is
        reported bound at its next ACK, and the map stays no larger than the reservations as VMs come and go."""
        self._reservations = new
        self._bound = {mac: held for mac, held in self._bound.items() if mac in new}

    def respond(self, data: bytes, source: str = "0.0.0.0") -> Reply | None:
        """The reply to one datagram from IP `source` and where to send it, or None (malformed, unknown,
        no answer due)."""
        self.stats["rx"] += 1
        try:
            req = c.parse(data)
        except c.DhcpCodecError:
            self.stats["malformed"] += 1
            return None
        if req.op != c.BOOTREQUEST or req.htype != 1 or req.hlen != 6:
            self.stats["ignored"] += 1
            return None
        res = self.reservations.get(req.chaddr[:6])
        if res is None:
            self.stats["unknown"] += 1
            return None
        mtype = req.message_type
        notice = mtype in (c.RELEASE, c.DECLINE)
        if not (self.limits.notices if notice else self.limits.requests).take(res.mac):
            self.stats["rate_limited"] += 1
            _ratelog.log(logging.WARNING, (self.l3_uuid, res.mac, notice), "DHCP messages over the rate, dropped",
                         fields={"l3": self.l3_uuid, "mac": res.mac.hex(":"), "notices": notice})
            return None
        relay = req.giaddr if req.giaddr != c.ZERO_IP and req.giaddr == c.ip_bytes(source) else None
        if mtype == c.DISCOVER:
            return self._reply(req, relay, res, c.OFFER, res.ip, c.ZERO_IP, res.options)
        if mtype == c.REQUEST:
            return self._request(req, relay, res)
        if mtype == c.INFORM:
            return self._reply(req, relay, res, c.ACK, c.ZERO_IP, req.ciaddr, res.inform_options, "inform")
        if notice:
            self._client_notice(req, res, "release" if mtype == c.RELEASE else "decline")
            return None
        self.stats["ignored"] += 1
        return None

    def _request(self, req: c.DhcpPacket, relay: bytes | None, res: Reservation) -> Reply | None:
        """SELECTING and INIT-REBOOT name the address in option 50; RENEWING/REBINDING in ciaddr."""
        server = req.ip_option(c.OPT_SERVER_ID)
        if server is not None and server != self.server_id:
            self.stats["other_server"] += 1
            return None
        wanted = req.ip_option(c.OPT_REQUESTED_IP) or req.ciaddr
        if wanted != res.ip:
            return self._reply(req, relay, res, c.NAK, c.ZERO_IP, c.ZERO_IP, self._nak_options)
        held = (res.nic_uuid, res.ip)  # another NIC with this MAC (and maybe address) is another binding
        if self._bound.get(res.mac) != held:
            self._bound[res.mac] = held
            self._report(res, "bound")
        return self._reply(req, relay, res, c.ACK, res.ip, req.ciaddr, res.options)

    def _report(self, res: Reservation, state: str) -> None:
        if self.on_lease is not None:
            try:
                self.on_lease(res, state)
            except Exception:  # a broken sink must not stop DHCP
                _ratelog.log(logging.ERROR, "report", "lease report failed", exc_info=True)

    def _reply(self, req: c.DhcpPacket, relay: bytes | None, res: Reservation, mtype: int, yiaddr: bytes,
               ciaddr: bytes, options: bytes, stat: str | None = None) -> Reply:
        echo = [(code, req.options[code]) for code in (c.OPT_CLIENT_ID, c.OPT_RELAY_AGENT) if code in req.options]
        if echo:  # RFC 6842 (client identifier) and RFC 3046 (relay agent information)
            options += c.encode_options(echo)
        self.stats[stat or _NAMES[mtype]] += 1
        return c.build_reply(req, mtype, yiaddr, ciaddr, options), destination(req, relay, res.ip, mtype, yiaddr)

    def _client_notice(self, req: c.DhcpPacket, res: Reservation, kind: str) -> None:
        """RELEASE needs nothing for a static lease; DECLINE means someone else holds the address."""
        self.stats[kind] += 1
        self._bound.pop(res.mac, None)
        self._report(res, "released" if kind == "release" else "declined")
        level = logging.WARNING if kind == "decline" else logging.INFO
        _ratelog.log(level, (self.l3_uuid, res.mac, kind), "client sent %s", kind.upper(),
                     fields={"l3": self.l3_uuid, "mac": res.mac.hex(":"), "ip": socket.inet_ntoa(res.ip)})


_NAMES = {c.OFFER: "offer", c.ACK: "ack", c.NAK: "nak"}


def destination(req: c.DhcpPacket, relay: bytes | None, reserved: bytes, mtype: int,
                yiaddr: bytes) -> tuple[str, int]:
    """RFC 2131 §4.1: relay first, NAK broadcast, then ciaddr, the broadcast flag, else yiaddr.

    A unicast goes only where the kernel can send at once: the reserved address (its neighbour entry
    is permanent) or a relay that sent the request from giaddr (it ARPed for us). A guest-chosen giaddr
    or ciaddr would park replies in the neighbour queue of an address nobody answers, and those
    count against this socket's send buffer: a few hundred such requests left the server unable to
    answer anyone for the seconds ARP takes to give up. Anything else is broadcast."""
    if relay is not None:
        return socket.inet_ntoa(relay), SERVER_PORT
    if mtype == c.NAK:
        return BROADCAST
    if req.ciaddr != c.ZERO_IP:
        return (socket.inet_ntoa(reserved), CLIENT_PORT) if req.ciaddr == reserved else BROADCAST
    if req.flags & c.FLAG_BROADCAST or yiaddr == c.ZERO_IP:
        return BROADCAST
    return socket.inet_ntoa(reserved), CLIENT_PORT


def setup_socket(sock: socket.socket, device: str) -> None:
    """Configure a fresh UDP socket (inside the namespace) as the DHCP server socket of `device`."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
    sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 4 << 20)
    sock.bind(("0.0.0.0", SERVER_PORT))
    sock.setblocking(False)


class DhcpEndpoint:
    """Serves a responder on a namespace's socket from the event loop until closed."""

    def __init__(self, sock: socket.socket, responder: DhcpResponder):
        self.sock = sock
        self.responder = responder
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._loop = None
        self.sock.close()

    def _readable(self) -> None:
        """Drain up to a burst of datagrams; one bad packet never stops the endpoint."""
        sock, responder = self.sock, self.responder
        for _ in range(_BURST):
            try:
                data, (source, _) = sock.recvfrom(c.MAX_PACKET + 1)
            except (BlockingIOError, InterruptedError):
                return
            try:
                reply = responder.respond(data, source)
                if reply is not None:
                    sock.sendto(*reply)
            except OSError as e:
                responder.stats["tx_errors"] += 1
                _ratelog.log(logging.DEBUG, (responder.l3_uuid, "tx"), "DHCP reply not sent: %s", e)
            except Exception:  # a bug: keep serving everyone else, count it, show it
                responder.stats["errors"] += 1
                _ratelog.log(logging.ERROR, (responder.l3_uuid, "bug"), "DHCP request crashed the responder",
                             exc_info=True, fields={"l3": responder.l3_uuid})
