"""IP range math: the pool, random picks that avoid what is taken or reserved, fixed addresses."""

from __future__ import annotations

import ipaddress

import pytest

from agentkit.errors import Invalid
from agentkit.model import IpRange, L3Spec
from coordinator.domain import ipam
from coordinator.domain.errors import IpExhausted, IpInUse
from coordinator.etcd.store import Txn


def l3(ranges: list[tuple[str, str]] | None = None, dhcp: str | None = None) -> L3Spec:
    return L3Spec(uuid="n1", name="priv", l2_uuid="l2", cidr="198.18.4.0/29", gateway="198.18.4.1",
                  ip_ranges=[IpRange(start=s, end=e) for s, e in ranges or []], dhcp_address=dhcp)


def ip(n: int) -> str:
    return str(ipaddress.IPv4Address("198.18.4.0") + n)


def test_the_pool_is_the_ranges_or_else_every_host_address():
    assert ipam.pool(l3()) == [(int(ipaddress.IPv4Address(ip(1))), int(ipaddress.IPv4Address(ip(6))))]
    assert ipam.pool(l3([(ip(2), ip(3)), (ip(5), ip(5))])) == [
        (int(ipaddress.IPv4Address(ip(2))), int(ipaddress.IPv4Address(ip(3)))),
        (int(ipaddress.IPv4Address(ip(5))), int(ipaddress.IPv4Address(ip(5))))]


def test_picks_cover_exactly_the_free_addresses_then_run_out():
    net = l3(dhcp=ip(2))
    free = {ip(3), ip(4), ip(5), ip(6)}
    used: set[str] = set()
    for _ in range(4):
        got = ipam.pick(net, used)
        assert got in free - used
        used.add(got)
    with pytest.raises(IpExhausted) as e:
        ipam.pick(net, used)
    assert e.value.code == "ip_exhausted" and str(e.value) == "L3 network priv (n1) has no free IP address left"
    assert ipam.pick(net, set(), avoid=free - {ip(5)}) == ip(5)


def test_a_fixed_address_must_be_in_the_ranges_and_not_reserved():
    net = l3([(ip(1), ip(4))], dhcp=ip(2))
    ipam.check_fixed(net, ip(3), "fixed_ips")
    with pytest.raises(Invalid, match="outside the IP ranges") as e:
        ipam.check_fixed(net, ip(5), "fixed_ips")
    assert e.value.field == "fixed_ips"
    with pytest.raises(Invalid, match="not an IPv4 address"):
        ipam.check_fixed(net, "198.18.4.300", "vip")
    for reserved in (ip(1), ip(2)):
        with pytest.raises(IpInUse) as e:
            ipam.check_fixed(net, reserved, "vip")
        assert (e.value.status, e.value.field) == (409, "vip")


def test_a_claim_creates_the_address_key_only_if_absent():
    txn = ipam.claim(Txn(), "n1", ip(3), {"vm": "v1"})
    assert len(txn.compares) == 1 and len(txn.ops) == 1
    assert txn.compares[0].key == b"/hs/ipam/n1/" + ip(3).encode() and txn.compares[0].create_revision == 0


def test_next_fit_hands_out_neighbours_from_its_place_and_wraps_around():
    net = l3(dhcp=ip(2))  # pool 1..6; 1 is the gateway, 2 the DHCP address
    got, at = ipam.next_free(net, int(ipaddress.IPv4Address(ip(4))), set())
    assert got == ip(4)
    got, at = ipam.next_free(net, at, {ip(5)})
    assert got == ip(6)
    got, at = ipam.next_free(net, at, {ip(4)}, {ip(6)})  # wraps past the reserved ones
    assert got == ip(3)
    with pytest.raises(IpExhausted):
        ipam.next_free(net, at, {ip(3), ip(4), ip(5), ip(6)})


def test_next_fit_starts_anywhere_and_skips_gaps_between_ranges():
    net = l3([(ip(1), ip(2)), (ip(5), ip(6))])
    assert {ipam.next_free(net, None, set())[0] for _ in range(200)} == {ip(2), ip(5), ip(6)}  # 1: the gateway
    assert ipam.next_free(net, int(ipaddress.IPv4Address(ip(3))), set()) == (ip(2), int(ipaddress.IPv4Address(ip(3))))
    assert ipam.next_free(net, int(ipaddress.IPv4Address(ip(6))) + 1, {ip(2)})[0] == ip(5)
