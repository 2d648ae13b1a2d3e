"""The neighbour-table reader's netlink parsing, fed prepared kernel answers over a socket pair.

The reader against a real namespace's table: tests/functional/flatnet/test_metadata_identity.py.
"""

from __future__ import annotations

import socket
import struct

import pytest

from flatnet.metadata.neighbours import NeighbourTable

RTM_NEWNEIGH, NLMSG_ERROR, NLMSG_DONE = 28, 2, 3
NUD_REACHABLE, NUD_INCOMPLETE, NUD_PERMANENT = 0x02, 0x01, 0x80


def message(kind: int, payload: bytes, seq: int = 1) -> bytes:
    data = struct.pack("=IHHII", 16 + len(payload), kind, 0, seq, 0) + payload
    return data + bytes(-len(data) % 4)


def attr(kind: int, value: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(value), kind) + value
    return data + bytes(-len(data) % 4)


def entry(ip: str, mac: str | None, state: int = NUD_REACHABLE, seq: int = 1) -> bytes:
    attrs = attr(1, socket.inet_aton(ip)) + (attr(2, bytes.fromhex(mac.replace(":", ""))) if mac else b"")
    return message(RTM_NEWNEIGH, struct.pack("=BxxxiHBB", socket.AF_INET, 2, state, 0, 1) + attrs, seq)


def done(seq: int = 1) -> bytes:
    return message(NLMSG_DONE, struct.pack("=i", 0), seq)


@pytest.fixture
def kernel():
    """(our table, the kernel's end): what the test writes to the kernel's end is the next dump's answer."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.settimeout(1.0)
    table = NeighbourTable(ours)
    yield table, theirs
    table.close()
    theirs.close()


def test_the_one_usable_mac_of_an_address(kernel):
    table, theirs = kernel
    theirs.send(entry("198.18.0.9", "52:54:00:00:00:09", NUD_PERMANENT) + entry("198.18.0.10", "52:54:00:00:00:0a")
                + entry("198.18.0.10", None) + entry("198.18.0.11", "52:54:00:00:00:0b", NUD_INCOMPLETE) + done())
    assert table.mac_of("198.18.0.10") == "52:54:00:00:00:0a"
    request = theirs.recv(100)
    assert struct.unpack_from("=IHHII", request)[1:4] == (30, 0x301, 1)  # RTM_GETNEIGH, REQUEST|DUMP, seq 1
    for ip, seq in (("198.18.0.11", 2), ("198.18.0.12", 3)):  # unresolved, absent
        theirs.send(entry(ip, "52:54:00:00:00:0b", NUD_INCOMPLETE, seq) + done(seq))
        assert table.mac_of(ip) is None


def test_two_macs_for_one_address_name_nobody_and_stale_answers_are_skipped(kernel):
    table, theirs = kernel
    theirs.send(entry("198.18.0.10", "52:54:00:00:00:0a", seq=7) + entry("198.18.0.10", "52:54:00:00:00:0a")
                + entry("198.18.0.10", "52:54:00:66:66:66") + done())
    assert table.mac_of("198.18.0.10") is None


def test_a_netlink_error_is_an_os_error(kernel):
    table, theirs = kernel
    theirs.send(message(NLMSG_ERROR, struct.pack("=i", -1)))
    with pytest.raises(OSError, match="netlink neighbour dump failed"):
        table.mac_of("198.18.0.10")
