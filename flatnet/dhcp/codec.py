"""DHCPv4 wire format (RFC 2131/2132, 3396 long options, 3442 classless routes) with `struct`.

Parsing is the hot path of the DHCP server and faces untrusted input: it touches each option
byte once and raises `DhcpCodecError` (never anything else) for every malformed message.
Replies are built from a pre-encoded option block, so answering costs one header pack.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

COOKIE = b"\x63\x82\x53\x63"
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
FIXED_LEN = HEADER.size + len(COOKIE)  # 240
MIN_REPLY_LEN = 300  # BOOTP minimum (RFC 1542 §2.1): some clients drop shorter messages
MAX_PACKET = 4096
MAX_OPTIONS = 512
BOOTREQUEST, BOOTREPLY = 1, 2
FLAG_BROADCAST = 0x8000
ZERO_IP = b"\0\0\0\0"

# Message types (option 53)
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)

# Option codes used here
OPT_PAD = 0
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_HOSTNAME = 12
OPT_DOMAIN = 15
OPT_MTU = 26
OPT_BROADCAST = 28
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_OVERLOAD = 52
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAM_LIST = 55
OPT_MESSAGE = 56
OPT_MAX_SIZE = 57
OPT_CLIENT_ID = 61
OPT_RELAY_AGENT = 82
OPT_CLASSLESS_ROUTES = 121
OPT_END = 255

_ZERO_SNAME = bytes(64)
_ZERO_FILE = bytes(128)


class DhcpCodecError(ValueError):
    """A message that is not valid DHCP; the only exception `parse` raises."""


@dataclass(slots=True)
class DhcpPacket:
    """A decoded DHCP message; addresses stay as 4-byte strings (cheap to compare and re-pack)."""

    op: int = BOOTREQUEST
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    xid: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: bytes = ZERO_IP
    yiaddr: bytes = ZERO_IP
    siaddr: bytes = ZERO_IP
    giaddr: bytes = ZERO_IP
    chaddr: bytes = bytes(16)
    sname: bytes = _ZERO_SNAME
    file: bytes = _ZERO_FILE
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def mac(self) -> bytes:
        """The client hardware address (Ethernet: first 6 bytes of chaddr)."""
        return self.chaddr[: self.hlen]

    @property
    def message_type(self) -> int | None:
        return self.options[OPT_MESSAGE_TYPE][0] if OPT_MESSAGE_TYPE in self.options else None

    def ip_option(self, code: int) -> bytes | None:
        """A single-address option (50, 54), or None when absent or not 4 bytes long."""
        value = self.options.get(code)
        return value if value is not None and len(value) == 4 else None


def _scan(data: bytes, i: int, end: int, out: dict[int, bytes], budget: int) -> int:
    """Decode one option area into `out`, concatenating repeated codes (RFC 3396); returns the budget left."""
    while i < end:
        code = data[i]
        if code == OPT_PAD:
            i += 1
            continue
        if code == OPT_END:
            return budget
        if i + 1 >= end:
            raise DhcpCodecError(f"option {code} truncated at offset {i}")
        stop = i + 2 + data[i + 1]
        if stop > end:
            raise DhcpCodecError(f"option {code} length {data[i + 1]} overruns the message at offset {i}")
        budget -= 1
        if budget < 0:
            raise DhcpCodecError(f"more than {MAX_OPTIONS} options")
        if code in out:
            out[code] += data[i + 2 : stop]
        else:
            out[code] = data[i + 2 : stop]
        i = stop
    return budget


def parse(data: bytes) -> DhcpPacket:
    """Decode a DHCP message; raise DhcpCodecError for anything malformed."""
    n = len(data)
    if n < FIXED_LEN:
        raise DhcpCodecError(f"message of {n} bytes is shorter than {FIXED_LEN}")
    if n > MAX_PACKET:
        raise DhcpCodecError(f"message of {n} bytes is longer than {MAX_PACKET}")
    if data[236:240] != COOKIE:
        raise DhcpCodecError("bad magic cookie")
    f: tuple[int, int, int, int, int, int, int, bytes, bytes, bytes, bytes, bytes, bytes, bytes]
    f = HEADER.unpack_from(data)
    if f[2] > 16:
        raise DhcpCodecError(f"hardware address length {f[2]} > 16")
    options: dict[int, bytes] = {}
    budget = _scan(data, FIXED_LEN, n, options, MAX_OPTIONS)
    overload = options.get(OPT_OVERLOAD)
    if overload is not None:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise DhcpCodecError(f"bad option overload value {overload!r}")
        if overload[0] & 1:
            budget = _scan(data, 108, 236, options, budget)
        if overload[0] & 2:
            _scan(data, 44, 108, options, budget)
    mtype = options.get(OPT_MESSAGE_TYPE)
    if mtype is not None and len(mtype) != 1:
        raise DhcpCodecError(f"message type option of length {len(mtype)}")
    return DhcpPacket(*f, options=options)


def encode_options(items: Iterable[tuple[int, bytes]]) -> bytes:
    """TLV-encode options (no END); values over 255 bytes are split into repeated codes (RFC 3396)."""
    out = bytearray()
    for code, value in items:
        if not 0 < code < OPT_END:
            raise DhcpCodecError(f"option code {code} cannot carry data")
        if not value:
            out += bytes((code, 0))
        for i in range(0, len(value), 255):
            chunk = value[i : i + 255]
            out += bytes((code, len(chunk))) + chunk
    return bytes(out)


def build(p: DhcpPacket) -> bytes:
    """Encode a whole message (used for requests in tests and tools; replies use `build_reply`)."""
    head = HEADER.pack(p.op, p.htype, p.hlen, p.hops, p.xid, p.secs, p.flags, p.ciaddr, p.yiaddr,
                       p.siaddr, p.giaddr, p.chaddr.ljust(16, b"\0"), p.sname, p.file)
    msg = head + COOKIE + encode_options(p.options.items()) + b"\xff"
    return msg.ljust(MIN_REPLY_LEN, b"\0")


def build_reply(req: DhcpPacket, msg_type: int, yiaddr: bytes, ciaddr: bytes, options: bytes) -> bytes:
    """A BOOTREPLY answering `req`: `options` is pre-encoded and must not hold option 53 or END."""
    flags = req.flags | FLAG_BROADCAST if msg_type == NAK and req.giaddr != ZERO_IP else req.flags
    head = HEADER.pack(BOOTREPLY, req.htype, req.hlen, 0, req.xid, 0, flags, ciaddr, yiaddr,
                       ZERO_IP, req.giaddr, req.chaddr, _ZERO_SNAME, _ZERO_FILE)
    msg = b"".join((head, COOKIE, b"\x35\x01", bytes((msg_type,)), options, b"\xff"))
    return msg if len(msg) >= MIN_REPLY_LEN else msg.ljust(MIN_REPLY_LEN, b"\0")


# Option value encoders: one per value kind of RFC 2132.
def ip_bytes(address: str) -> bytes:
    return ipaddress.IPv4Address(address).packed


def ip_list(addresses: Iterable[str]) -> bytes:
    return b"".join(ip_bytes(a) for a in addresses)


def u32(value: int) -> bytes:
    return struct.pack("!I", value)


def u16(value: int) -> bytes:
    return struct.pack("!H", value)


def classless_routes(routes: Iterable[tuple[str, str]]) -> bytes:
    """Option 121 value for (destination CIDR, router) pairs: width, significant octets, router."""
    out = bytearray()
    for dest, router in routes:
        net = ipaddress.IPv4Network(dest)
        width = net.prefixlen
        out.append(width)
        out += net.network_address.packed[: (width + 7) // 8]
        out += ip_bytes(router)
    return bytes(out)


def parse_classless_routes(value: bytes) -> list[tuple[str, str]]:
    """Inverse of `classless_routes` (used by tests and diagnostics)."""
    routes, i = [], 0
    while i < len(value):
        width = value[i]
        size = (width + 7) // 8
        if width > 32 or i + 1 + size + 4 > len(value):
            raise DhcpCodecError("malformed classless static route option")
        dest = value[i + 1 : i + 1 + size].ljust(4, b"\0")
        router = value[i + 1 + size : i + 5 + size]
        routes.append((f"{ipaddress.IPv4Address(dest)}/{width}", str(ipaddress.IPv4Address(router))))
        i += 5 + size
    return routes
