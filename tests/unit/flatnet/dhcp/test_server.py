"""The DHCP protocol logic (RFC 2131 §4.3) and the reservations it serves, without sockets."""

from __future__ import annotations

import pytest
from scapy.layers.dhcp import BOOTP, DHCP

from agentkit.model import L3Spec, NicSpec, VmSpec
from flatnet.dhcp import codec as c
from flatnet.dhcp.leases import reservations
from flatnet.dhcp.server import BROADCAST, DhcpLimits, DhcpResponder

MAC, MAC2, OTHER = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:99"
L3 = L3Spec(uuid="l3", name="net", l2_uuid="l2", cidr="198.18.4.0/24", gateway="198.18.4.1",
            dns_servers=["198.18.200.53"], domain="cloud.test", mtu=1450, services=["DHCP", "DNS"],
            dhcp_address="198.18.4.2")
NIC = NicSpec(uuid="n1", l3_uuid="l3", mac=MAC, ip="198.18.4.10", default=True)
NIC2 = NicSpec(uuid="n2", l3_uuid="l3", mac=MAC2, ip="198.18.4.11", default=False)
VM = VmSpec(uuid="vm1", name="Web Server_1", nics=[NIC])
VM2 = VmSpec(uuid="vm2", name="db", nics=[NicSpec(uuid="n0", l3_uuid="other", mac="52:54:00:00:00:03",
                                                  ip="10.0.0.3", default=True), NIC2])


@pytest.fixture
def responder() -> DhcpResponder:
    r = DhcpResponder(L3.dhcp_address, L3.uuid)
    r.reservations = reservations(L3, [(VM, NIC), (VM2, NIC2)], lease_time=3600)
    return r


def request(mac: str = MAC, mtype: str = "discover", flags: int = 0, extra=(), **fields) -> bytes:
    return bytes(BOOTP(chaddr=bytes.fromhex(mac.replace(":", "")), xid=77, flags=flags, **fields)
                 / DHCP(options=[("message-type", mtype), *extra, "end"]))


def options(reply: bytes) -> dict:
    return {o[0]: o[1] if len(o) == 2 else o[1:] for o in BOOTP(reply)[DHCP].options if isinstance(o, tuple)}


def test_discover_offers_the_reserved_address_with_every_option(responder):
    data, dest = responder.respond(request(flags=0x8000))
    pkt, opts = BOOTP(data), options(data)
    assert (pkt.op, pkt.xid, pkt.yiaddr, pkt.ciaddr) == (2, 77, "198.18.4.10", "0.0.0.0")
    assert dest == BROADCAST
    assert opts["message-type"] == 2
    assert opts["server_id"] == "198.18.4.2"
    assert opts["lease_time"] == 3600
    assert opts["subnet_mask"] == "255.255.255.0"
    assert opts["broadcast_address"] == "198.18.4.255"
    assert opts["router"] == "198.18.4.1"
    assert opts["name_server"] == "198.18.4.2"  # our DNS, which forwards to the L3's servers
    assert opts["domain"] == b"cloud.test"
    assert opts["hostname"] == b"web-server-1"
    assert opts["interface-mtu"] == 1450
    assert opts["classless_static_routes"] == ["169.254.169.254/32:198.18.4.2", "0.0.0.0/0:198.18.4.1"]


def test_unicast_offer_goes_to_yiaddr_when_no_broadcast_flag(responder):
    _, dest = responder.respond(request())
    assert dest == ("198.18.4.10", 68)


def test_non_default_nic_gets_no_router_dns_domain_or_routes(responder):
    data, _ = responder.respond(request(MAC2))
    opts = options(data)
    assert BOOTP(data).yiaddr == "198.18.4.11"
    assert not {"router", "name_server", "domain", "classless_static_routes"} & opts.keys()
    assert opts["subnet_mask"] == "255.255.255.0" and opts["interface-mtu"] == 1450 and opts["hostname"] == b"db"


def test_without_gateway_or_dns_service_only_metadata_route_and_l3_servers():
    l3 = L3.model_copy(update={"gateway": None, "services": ["DHCP"]})
    r = DhcpResponder(l3.dhcp_address)
    r.reservations = reservations(l3, [(VM, NIC)], lease_time=60)
    opts = options(r.respond(request())[0])
    assert "router" not in opts
    assert opts["classless_static_routes"] == ["169.254.169.254/32:198.18.4.2"]
    assert opts["name_server"] == "198.18.200.53"


def test_unknown_mac_gets_silence(responder):
    assert responder.respond(request(OTHER)) is None
    assert responder.stats["unknown"] == 1


def test_keyed_by_hardware_address_whatever_client_id(responder):
    duid = b"\xff\x00\xaa\x00\x01\x00\x01\x32\x95\x57\xd3\x52\x54\x00\x99\x99\x99"
    data, _ = responder.respond(request(extra=[("client_id", duid)]))
    assert BOOTP(data).yiaddr == "198.18.4.10"
    assert options(data)["client_id"] == duid  # echoed (RFC 6842)


@pytest.mark.parametrize("extra, ciaddr, expect, dest", [
    ([("server_id", "198.18.4.2"), ("requested_addr", "198.18.4.10")], "0.0.0.0", 5, ("198.18.4.10", 68)),
    ([("server_id", "198.18.4.2"), ("requested_addr", "198.18.4.99")], "0.0.0.0", 6, BROADCAST),
    ([("requested_addr", "198.18.4.10")], "0.0.0.0", 5, ("198.18.4.10", 68)),  # INIT-REBOOT
    ([("requested_addr", "10.9.9.9")], "0.0.0.0", 6, BROADCAST),
    ([], "198.18.4.10", 5, ("198.18.4.10", 68)),  # RENEWING
    ([], "198.18.4.12", 6, BROADCAST),
])
def test_request_states(responder, extra, ciaddr, expect, dest):
    data, to = responder.respond(request(mtype="request", extra=extra, ciaddr=ciaddr))
    pkt = BOOTP(data)
    assert options(data)["message-type"] == expect
    assert to == dest
    if expect == 5:
        assert pkt.yiaddr == "198.18.4.10" and pkt.ciaddr == ciaddr
    else:
        assert pkt.yiaddr == "0.0.0.0" and "lease_time" not in options(data)


def test_request_for_another_server_is_ignored(responder):
    extra = [("server_id", "198.18.4.250"), ("requested_addr", "198.18.4.10")]
    assert responder.respond(request(mtype="request", extra=extra)) is None
    assert responder.stats["other_server"] == 1


def test_relay_replies_go_to_giaddr_server_port(responder):
    _, dest = responder.respond(request(giaddr="198.18.4.200", flags=0x8000), "198.18.4.200")
    assert dest == ("198.18.4.200", 67)
    agent = b"\x01\x04abcd"
    data, dest = responder.respond(request(mtype="request", giaddr="198.18.4.200",
                                           extra=[("requested_addr", "198.18.4.77"), ("relay_agent_information",
                                                                                      agent)]), "198.18.4.200")
    assert dest == ("198.18.4.200", 67) and BOOTP(data).flags == 0x8000
    assert options(data)["relay_agent_information"] == agent


@pytest.mark.parametrize("mtype, giaddr, ciaddr", [
    ("discover", "198.18.4.77", "0.0.0.0"),  # a giaddr the request did not come from
    ("request", "10.1.2.3", "198.18.4.10"),
    ("inform", "0.0.0.0", "37.46.232.77"),  # a ciaddr that is not the client's reserved address
])
def test_replies_never_go_to_an_address_the_guest_made_up(responder, mtype, giaddr, ciaddr):
    """Unicast to an address nobody answers would park replies in the neighbour queue and fill the
    socket's send buffer: one guest could silence DHCP for every other (the fuzz test found it)."""
    _, dest = responder.respond(request(mtype=mtype, giaddr=giaddr, ciaddr=ciaddr), "0.0.0.0")
    assert dest in (BROADCAST, ("198.18.4.10", 68))


def test_inform_acks_without_address_or_lease_time(responder):
    data, dest = responder.respond(request(mtype="inform", ciaddr="198.18.4.10"))
    pkt, opts = BOOTP(data), options(data)
    assert opts["message-type"] == 5 and pkt.yiaddr == "0.0.0.0" and pkt.ciaddr == "198.18.4.10"
    assert "lease_time" not in opts and opts["router"] == "198.18.4.1"
    assert dest == ("198.18.4.10", 68)


@pytest.mark.parametrize("mtype", ["release", "decline"])
def test_release_and_decline_are_not_answered(responder, mtype):
    assert responder.respond(request(mtype=mtype, ciaddr="198.18.4.10")) is None
    assert responder.stats[mtype] == 1


def test_bogus_types_and_replies_are_ignored(responder):
    assert responder.respond(request(mtype="offer")) is None
    assert responder.respond(request(mtype=77)) is None
    assert responder.respond(bytes(BOOTP(op=2, chaddr=bytes.fromhex("525400000001")) / DHCP(
        options=[("message-type", "discover"), "end"]))) is None
    assert responder.respond(bytes(BOOTP(chaddr=bytes.fromhex("525400000001")) / DHCP(options=["end"]))) is None
    assert responder.respond(b"\x01" * 100) is None
    assert responder.stats["malformed"] == 1 and responder.stats["ignored"] == 4


def test_reservation_change_applies_to_the_next_packet(responder):
    assert responder.respond(request(OTHER)) is None
    nic = NicSpec(uuid="n9", l3_uuid="l3", mac=OTHER, ip="198.18.4.99", default=True)
    responder.reservations = reservations(L3, [(VM, NIC), (VmSpec(uuid="v9", name="new", nics=[nic]), nic)], 60)
    assert BOOTP(responder.respond(request(OTHER))[0]).yiaddr == "198.18.4.99"
    responder.reservations = {}
    assert responder.respond(request(OTHER)) is None


def test_invalid_nics_are_left_out():
    bad_ip = NicSpec(uuid="x", l3_uuid="l3", mac="52:54:00:00:00:05", ip="10.1.1.1", default=True)
    dup1 = NicSpec(uuid="d1", l3_uuid="l3", mac="52:54:00:00:00:06", ip="198.18.4.20", default=True)
    dup2 = NicSpec(uuid="d2", l3_uuid="l3", mac="52:54:00:00:00:06", ip="198.18.4.21", default=True)
    vm = VmSpec(uuid="v", name="v")
    got = reservations(L3, [(vm, NIC), (vm, bad_ip), (vm, dup1), (vm, dup2)], 60)
    assert set(got) == {bytes.fromhex("525400000001")}


def test_reply_is_padded_and_bounded(responder):
    data, _ = responder.respond(request())
    assert c.MIN_REPLY_LEN <= len(data) <= 576 - 28


def test_lease_changes_are_reported_once_and_renewals_are_not(responder):
    seen = []
    responder.on_lease = lambda res, state: seen.append((res.vm_uuid, res.nic_uuid, state))
    select = [("server_id", "198.18.4.2"), ("requested_addr", "198.18.4.10")]
    responder.respond(request(mtype="discover"))
    responder.respond(request(mtype="request", extra=select))
    for _ in range(3):  # RENEWING: ciaddr, no option 50
        responder.respond(request(mtype="request", ciaddr="198.18.4.10"))
    responder.respond(request(mtype="request", extra=[("requested_addr", "198.18.4.99")]))  # NAK: no change
    responder.respond(request(OTHER, mtype="request", extra=select))  # unknown MAC: nothing
    assert seen == [("vm1", "n1", "bound")]
    responder.respond(request(mtype="release", ciaddr="198.18.4.10", extra=[("server_id", "198.18.4.2")]))
    responder.respond(request(MAC2, mtype="decline", extra=[("requested_addr", "198.18.4.11")]))
    responder.respond(request(mtype="request", extra=select))
    assert seen[1:] == [("vm1", "n1", "released"), ("vm2", "n2", "declined"), ("vm1", "n1", "bound")]


def test_a_failing_lease_sink_does_not_stop_dhcp(responder):
    def broken(res, state):
        raise RuntimeError("journal full")
    responder.on_lease = broken
    data, _ = responder.respond(request(mtype="request", extra=[("requested_addr", "198.18.4.10")]))
    assert options(data)["message-type"] == 5


def test_each_mac_has_its_budget_and_notices_never_use_up_the_requests_one(responder):
    responder.limits = DhcpLimits.per_second(requests=1, notices=1)
    for _ in range(50):  # a flood of RELEASE/DECLINE with the client's MAC, forged or not
        responder.respond(request(mtype="release", ciaddr="198.18.4.10"))
        responder.respond(request(mtype="decline"))
    assert responder.stats["rate_limited"] == 100 - 4 - 1  # a burst of 5 notices heeded
    assert responder.respond(request()) is not None  # the client still gets its offer
    assert [responder.respond(request(MAC2)) is not None for _ in range(5)] == [True] * 4 + [False]


def test_a_nic_that_takes_a_gone_nics_mac_and_address_is_reported_bound(responder):
    """A VM deleted and another created with its MAC and address (in one update of the reservations or in
    two): the new NIC's lease is reported, as is the same NIC's when it comes back."""
    seen = []
    responder.on_lease = lambda res, state: seen.append((res.vm_uuid, res.nic_uuid, state))
    select = [("server_id", "198.18.4.2"), ("requested_addr", "198.18.4.10")]
    responder.respond(request(mtype="request", extra=select))
    heir = NIC.model_copy(update={"uuid": "n7"})
    responder.reservations = reservations(L3, [(VmSpec(uuid="vm7", name="heir", nics=[heir]), heir)], 3600)
    responder.respond(request(mtype="request", extra=select))
    responder.reservations = {}
    responder.reservations = reservations(L3, [(VM, NIC)], 3600)
    responder.respond(request(mtype="request", extra=select))
    responder.respond(request(mtype="request", ciaddr="198.18.4.10"))  # a renewal: nothing
    assert seen == [("vm1", "n1", "bound"), ("vm7", "n7", "bound"), ("vm1", "n1", "bound")]
