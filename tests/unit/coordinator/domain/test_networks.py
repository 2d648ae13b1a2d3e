"""An L3 network as requested: a real subnet, and its gateway and ranges inside it; its delete (on an in-memory
store); L2s that would share an uplink, L3s that would share addresses on one L2 and an L2 deleted under an L3 refused,
races included."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentkit.errors import InUse
from agentkit.model import L2Spec, L3Spec, stream_key_l2, stream_key_l3
from coordinator.domain import ipam, networks
from coordinator.domain.errors import MissingReference
from coordinator.domain.networks import L2Create, L3Create
from coordinator.etcd import keys
from coordinator.etcd.store import Txn

from .cloud import cloud, network
from .memstore import MemoryStore


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


async def l2(store: MemoryStore, name: str, interface: str = "eth1", vlan: int | None = None) -> L2Spec:
    return await networks.create_l2(store, L2Create(name=name, physical_interface=interface, vlan=vlan))


@pytest.mark.parametrize("vlan, message, field", [
    (None, r"eth1 is already used by L2 network a \(.{32}\)", "physical_interface"),
    (7, r"VLAN 7 of eth1 is already used by L2 network a \(.{32}\)", "vlan"),
])
async def test_a_second_l2_on_the_same_interface_and_vlan_is_refused(vlan: int | None, message: str, field: str):
    store = MemoryStore()
    await l2(store, "a", vlan=vlan)
    with pytest.raises(InUse, match=message) as e:
        await l2(store, "b", vlan=vlan)
    assert e.value.field == field and e.value.status == 409
    assert [n.name for n in await networks.list_l2(store)] == ["a"]


async def test_other_vlans_and_the_untagged_l2_share_an_interface():
    """The VLAN devices take their tagged frames before the untagged L2's bridge sees them."""
    store = MemoryStore()
    made = [await l2(store, "flat"), await l2(store, "v7", vlan=7), await l2(store, "v8", vlan=8),
            await l2(store, "other", "eth2")]
    assert sorted(n.uuid for n in await networks.list_l2(store)) == sorted(n.uuid for n in made)


async def test_an_l2_made_on_another_replica_meanwhile_refuses_the_same_interface():
    store = MemoryStore()
    theirs = L2Spec(uuid="a" * 32, name="a", physical_interface="eth1")
    store.meanwhile.append(Txn().put(keys.desired_all(stream_key_l2(theirs.uuid)), theirs.model_dump(mode="json")))
    with pytest.raises(InUse, match=f"eth1 is already used by L2 network a \\({'a' * 32}\\)"):
        await l2(store, "b")  # after it read none
    assert [n.name for n in await networks.list_l2(store)] == ["a"]


async def l3(store: MemoryStore, name: str, l2_uuid: str, cidr: str) -> L3Spec:
    return await networks.create_l3(store, make(name=name, l2_uuid=l2_uuid, cidr=cidr))


async def test_an_l3_overlapping_another_on_the_same_l2_is_refused_but_not_on_another_l2():
    store = MemoryStore()
    flat, other = await l2(store, "flat"), await l2(store, "other", "eth2")
    first = await l3(store, "first", flat.uuid, "198.18.8.0/24")
    with pytest.raises(InUse, match=rf"198\.18\.8\.128/25 overlaps 198\.18\.8\.0/24 of L3 network first "
                                    rf"\({first.uuid}\) on the same L2 network") as e:
        await l3(store, "second", flat.uuid, "198.18.8.128/25")
    assert e.value.field == "cidr"
    beside = await l3(store, "beside", flat.uuid, "198.18.9.0/24")
    elsewhere = await l3(store, "elsewhere", other.uuid, "198.18.8.0/24")
    assert sorted(n.uuid for n in await networks.list_l3(store)) == sorted([first.uuid, beside.uuid, elsewhere.uuid])


async def test_an_l3_made_on_another_replica_meanwhile_refuses_an_overlapping_cidr():
    store = MemoryStore()
    flat = await l2(store, "flat")
    theirs = L3Spec(uuid="c" * 32, name="theirs", l2_uuid=flat.uuid, cidr="198.18.0.0/16")
    store.meanwhile.append(Txn().put(keys.desired_all(stream_key_l3(theirs.uuid)), theirs.model_dump(mode="json")))
    with pytest.raises(InUse, match=r"198\.18\.8\.0/24 overlaps 198\.18\.0\.0/16 of L3 network theirs"):
        await l3(store, "ours", flat.uuid, "198.18.8.0/24")  # after it read none
    assert [n.name for n in await networks.list_l3(store)] == ["theirs"]


async def test_an_l3_made_on_another_replica_meanwhile_keeps_its_l2():
    store = MemoryStore()
    flat = await l2(store, "flat")
    theirs = L3Spec(uuid="c" * 32, name="theirs", l2_uuid=flat.uuid, cidr="198.18.0.0/16")
    store.meanwhile.append(Txn().put(keys.desired_all(stream_key_l3(theirs.uuid)), theirs.model_dump(mode="json")))
    with pytest.raises(InUse, match="L2 network flat is used by L3 networks theirs"):
        await networks.delete_l2(store, flat.uuid)  # after it read none
    assert [n.name for n in await networks.list_l2(store)] == ["flat"]


async def test_an_l3_made_as_its_l2_is_deleted_on_another_replica_is_refused_naming_the_l2():
    store = MemoryStore()
    flat = await l2(store, "flat")
    store.meanwhile.append(Txn().delete(keys.desired_all(stream_key_l2(flat.uuid))))
    with pytest.raises(MissingReference, match=f"L2 network {flat.uuid} does not exist") as e:
        await l3(store, "ours", flat.uuid, "198.18.8.0/24")  # after it read the L2
    assert e.value.field == "l2_uuid"
    assert await networks.list_l3(store) == []
