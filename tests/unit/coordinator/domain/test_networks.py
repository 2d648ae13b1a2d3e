"""An L3 network as requested: a real subnet, and its gateway and ranges inside it; its delete (on an in-memory
store)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentkit.errors import InUse
from coordinator.domain import ipam, networks
from coordinator.domain.networks import L3Create
from coordinator.etcd.store import Txn

from .cloud import cloud, network


def make(**kw: object) -> L3Create:
    return L3Create.model_validate({"name": "n", "l2_uuid": "l2", "cidr": "198.18.8.0/24", **kw})


def test_a_valid_network_is_normalised():
    got = make(gateway="198.18.8.1", ip_ranges=[{"start": "198.18.8.10", "end": "198.18.8.20"}])
    assert got.cidr == "198.18.8.0/24" and got.ip_ranges[0].end == "198.18.8.20"


@pytest.mark.parametrize("kw, message", [
    ({"cidr": "198.18.8.1/24"}, "not an IPv4 network"),
    ({"cidr": "198.18.8.0/31"}, "prefix must be /30 or larger"),
    ({"gateway": "198.18.9.1"}, "gateway: 198.18.9.1 is not a host address of 198.18.8.0/24"),
    ({"gateway": "198.18.8.255"}, "gateway: 198.18.8.255 is not a host address"),
    ({"gateway": "gw"}, "gateway: 'gw' is not an IPv4 address"),
    ({"ip_ranges": [{"start": "198.18.8.0", "end": "198.18.8.9"}]}, "ip_ranges: 198.18.8.0 is not a host address"),
    ({"ip_ranges": [{"start": "198.18.8.20", "end": "198.18.8.10"}]}, "ip_ranges: start 198.18.8.20 is after end"),
    ({"dns_servers": ["dns.example"]}, "Expected 4 octets"),
])
def test_addresses_outside_the_subnet_are_refused(kw: dict[str, object], message: str):
    with pytest.raises(ValidationError, match=message):
        make(**kw)


async def test_an_address_claimed_while_the_l3_is_deleted_keeps_the_l3():
    store = await cloud()
    l3 = await network(store)
    store.meanwhile.append(ipam.claim(Txn(), l3.uuid, "198.18.8.9", {"vm": "v1", "nic": "n1"}))
    with pytest.raises(InUse, match=r"L3 network priv still has 1 address in use: 198\.18\.8\.9 \(VM v1\)"):
        await networks.delete_l3(store, l3.uuid)  # after it read none
    assert [s.uuid for s in await networks.list_l3(store)] == [l3.uuid]
    assert await ipam.taken(store, l3.uuid) == {"198.18.8.9"}
