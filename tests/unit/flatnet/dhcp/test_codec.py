"""The struct codec against scapy as the oracle, and against malformed input."""

from __future__ import annotations

import random

import pytest
from scapy.layers.dhcp import BOOTP, DHCP

from flatnet.dhcp import codec as c

MAC = bytes.fromhex("525400123456")


def scapy_request(**fields) -> bytes:
    options = [("message-type", "request"), ("client_id", b"\xff\x00\x01\x02\x03" + b"D" * 10),
               ("requested_addr", "198.18.0.10"), ("server_id", "198.18.0.2"), ("hostname", b"guest"),
               ("param_req_list", [1, 3, 6, 15, 26, 121]), "end"]
    fields = {"flags": 0x8000, **fields}
    return bytes(BOOTP(chaddr=MAC, xid=0x1234ABCD, **fields) / DHCP(options=options))


def test_parse_matches_scapy_request():
    p = c.parse(scapy_request(giaddr="198.18.0.77", secs=3))
    assert (p.op, p.htype, p.hlen, p.xid, p.flags, p.secs) == (1, 1, 6, 0x1234ABCD, 0x8000, 3)
    assert p.mac == MAC
    assert p.giaddr == bytes([198, 18, 0, 77])
    assert p.message_type == c.REQUEST
    assert p.ip_option(c.OPT_REQUESTED_IP) == bytes([198, 18, 0, 10])
    assert p.ip_option(c.OPT_SERVER_ID) == bytes([198, 18, 0, 2])
    assert p.options[c.OPT_CLIENT_ID] == b"\xff\x00\x01\x02\x03" + b"D" * 10
    assert p.options[c.OPT_PARAM_LIST] == bytes([1, 3, 6, 15, 26, 121])
    assert p.options[c.OPT_HOSTNAME] == b"guest"


def test_reply_decoded_by_scapy():
    req = c.parse(scapy_request())
    routes = c.classless_routes([("169.254.169.254/32", "198.18.0.2"), ("0.0.0.0/0", "198.18.0.1")])
    opts = c.encode_options([(c.OPT_SERVER_ID, c.ip_bytes("198.18.0.2")), (c.OPT_LEASE_TIME, c.u32(3600)),
                             (c.OPT_SUBNET_MASK, c.ip_bytes("255.255.255.0")), (c.OPT_ROUTER, c.ip_bytes("198.18.0.1")),
                             (c.OPT_DNS, c.ip_list(["198.18.0.2", "198.18.0.3"])), (c.OPT_DOMAIN, b"cloud.test"),
                             (c.OPT_HOSTNAME, b"web-1"), (c.OPT_MTU, c.u16(1450)), (c.OPT_CLASSLESS_ROUTES, routes)])
    data = c.build_reply(req, c.ACK, c.ip_bytes("198.18.0.10"), c.ZERO_IP, opts)
    assert len(data) >= c.MIN_REPLY_LEN
    pkt = BOOTP(data)
    assert (pkt.op, pkt.xid, pkt.yiaddr, pkt.chaddr[:6]) == (2, 0x1234ABCD, "198.18.0.10", MAC)
    got = {o[0]: o[1:] for o in pkt[DHCP].options if isinstance(o, tuple)}
    assert got["message-type"] == (5,)
    assert got["server_id"] == ("198.18.0.2",)
    assert got["lease_time"] == (3600,)
    assert got["subnet_mask"] == ("255.255.255.0",)
    assert got["router"] == ("198.18.0.1",)
    assert got["name_server"] == ("198.18.0.2", "198.18.0.3")
    assert got["domain"] == (b"cloud.test",)
    assert got["hostname"] == (b"web-1",)
    assert got["interface-mtu"] == (1450,)
    assert got["classless_static_routes"] == (["169.254.169.254/32:198.18.0.2", "0.0.0.0/0:198.18.0.1"],)


def test_nak_through_relay_sets_broadcast_flag():
    req = c.parse(scapy_request(giaddr="198.18.0.77", flags=0))
    pkt = BOOTP(c.build_reply(req, c.NAK, c.ZERO_IP, c.ZERO_IP, b""))
    assert pkt.flags == 0x8000 and pkt.giaddr == "198.18.0.77"


def test_classless_routes_rfc3442_encoding():
    assert c.classless_routes([("0.0.0.0/0", "10.0.0.1")]) == bytes([0, 10, 0, 0, 1])
    assert c.classless_routes([("10.0.0.0/8", "10.0.0.1")]) == bytes([8, 10, 10, 0, 0, 1])
    assert c.classless_routes([("10.17.0.0/16", "10.0.0.1")]) == bytes([16, 10, 17, 10, 0, 0, 1])
    assert c.classless_routes([("10.27.129.0/24", "10.0.0.1")]) == bytes([24, 10, 27, 129, 10, 0, 0, 1])
    routes = [("169.254.169.254/32", "198.18.0.2"), ("10.229.0.128/25", "10.0.0.1"), ("0.0.0.0/0", "198.18.0.1")]
    assert c.parse_classless_routes(c.classless_routes(routes)) == routes


def test_long_options_split_and_joined():
    value = bytes(range(256)) * 2
    encoded = c.encode_options([(c.OPT_CLASSLESS_ROUTES, value)])
    assert encoded[0] == 121 and encoded[1] == 255 and encoded.count(b"\x79") >= 3
    pkt = c.DhcpPacket(options={c.OPT_MESSAGE_TYPE: b"\x01", c.OPT_CLASSLESS_ROUTES: value})
    assert c.parse(c.build(pkt)).options[c.OPT_CLASSLESS_ROUTES] == value


def test_option_overload_reads_file_and_sname():
    data = bytearray(c.build(c.DhcpPacket(options={c.OPT_MESSAGE_TYPE: b"\x01", c.OPT_OVERLOAD: b"\x03"})))
    data[108:115] = bytes([c.OPT_HOSTNAME, 4]) + b"host" + b"\xff"
    data[44:51] = bytes([c.OPT_REQUESTED_IP, 4, 10, 0, 0, 9, 255])
    p = c.parse(bytes(data))
    assert p.options[c.OPT_HOSTNAME] == b"host"
    assert p.ip_option(c.OPT_REQUESTED_IP) == bytes([10, 0, 0, 9])


def valid() -> bytearray:
    return bytearray(scapy_request())


@pytest.mark.parametrize("mutate, reason", [
    (lambda d: d[:239], "shorter than"),
    (lambda d: d[:236] + b"\x63\x82\x53\x64" + d[240:], "cookie"),
    (lambda d: d[:240] + bytes([12, 200]) + b"x" * 10, "overruns"),
    (lambda d: d[:240] + bytes([12]), "truncated"),
    (lambda d: d[:240] + bytes([53, 2, 1, 1, 255]), "message type"),
    (lambda d: d[:240] + bytes([52, 1, 7, 255]), "overload"),
    (lambda d: d[:2] + bytes([17]) + d[3:], "hardware address length"),
    (lambda d: d[:240] + bytes([12, 1, 65]) * 600 + b"\xff", "more than"),
    (lambda d: d + bytes(c.MAX_PACKET), "longer than"),
])
def test_malformed_input_raises_codec_error(mutate, reason):
    with pytest.raises(c.DhcpCodecError, match=reason):
        c.parse(bytes(mutate(valid())))


def test_missing_end_option_is_tolerated():
    data = c.build(c.DhcpPacket(options={c.OPT_MESSAGE_TYPE: b"\x01"}))
    assert c.parse(data[:243]).message_type == c.DISCOVER


def test_random_mutations_raise_only_codec_errors():
    rng = random.Random(4)
    base = bytes(valid())
    outcomes = {"ok": 0, "err": 0}
    for _ in range(20000):
        d = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            d[rng.randrange(len(d))] = rng.randrange(256)
        if rng.random() < 0.3:
            d = d[: rng.randrange(len(d) + 1)]
        try:
            c.parse(bytes(d))
            outcomes["ok"] += 1
        except c.DhcpCodecError:
            outcomes["err"] += 1
    assert outcomes["ok"] > 1000 and outcomes["err"] > 1000
