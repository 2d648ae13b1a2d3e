"""Unit tests: which EIPs the dataplane applies, and how they are grouped into namespaces."""

from __future__ import annotations

import ipaddress

from agentkit.model import EipBinding, L2Spec, L3Spec, NicSpec, Service, VmSpec
from flatnet.eip import plan as eip_plan

PRIV_L2 = L2Spec(uuid="l2-priv-0001", name="priv", physical_interface="eth1")
PUB_L2 = L2Spec(uuid="l2-pub-00001", name="pub", physical_interface="eth2", vlan=100)
PRIV = L3Spec(uuid="l3-priv-0001", name="priv", l2_uuid=PRIV_L2.uuid, cidr="198.18.0.0/24",
              gateway="198.18.0.1", services=[Service.DHCP, Service.EIP])
PRIV2 = L3Spec(uuid="l3-priv-0002", name="priv2", l2_uuid=PRIV_L2.uuid, cidr="198.18.0.0/24",
               services=[Service.EIP])
NO_EIP = L3Spec(uuid="l3-flat-0003", name="flat", l2_uuid=PRIV_L2.uuid, cidr="198.18.1.0/24",
                services=[Service.DHCP])
PUB = L3Spec(uuid="l3-pub-00001", name="pub", l2_uuid=PUB_L2.uuid, cidr="203.0.113.0/24",
             gateway="203.0.113.1", public=True, mtu=1400)
L2S = {x.uuid: x for x in (PRIV_L2, PUB_L2)}
L3S = {x.uuid: x for x in (PRIV, PRIV2, NO_EIP, PUB)}


def vm(n: int, l3: L3Spec = PRIV, vip: str | None = None, ip: str | None = None) -> VmSpec:
    eip = EipBinding(uuid=f"eip-{n}", vip=vip, public_l3_uuid=PUB.uuid) if vip else None
    nic = NicSpec(uuid=f"nic-{n:04d}", l3_uuid=l3.uuid, mac=f"52:54:00:00:00:{n:02x}",
                  ip=ip or str(l3.network.network_address + n), default=True, eip=eip)
    return VmSpec(uuid=f"vm-{n}", name=f"vm{n}", nics=[nic])


def build(*vms: VmSpec) -> dict[str, eip_plan.PairPlan]:
    return eip_plan.build(L2S, L3S, {v.uuid: v for v in vms}, "hse")


def test_one_namespace_per_pair_not_per_eip():
    plans = build(*(vm(n, vip=f"203.0.113.{100 + n}") for n in range(1, 51)), vm(60))
    (plan,) = plans.values()
    assert plan.netns == "hse" + eip_plan.pair_key(PUB.uuid, PRIV.uuid)
    assert len(plan.bindings) == 50
    assert [b.vip for b in plan.bindings] == sorted(b.vip for b in plan.bindings)
    assert plan.public_bridge == PUB_L2.bridge and plan.private_bridge == PRIV_L2.bridge
    assert plan.public_mtu == 1400 and plan.public_gateway == ipaddress.IPv4Address("203.0.113.1")
    assert len(plan.host_public_dev) <= 15 and len(plan.host_private_dev) <= 15


def test_overlapping_private_l3s_get_separate_namespaces():
    plans = build(vm(5, vip="203.0.113.5"), vm(6, PRIV2, vip="203.0.113.6", ip="198.18.0.5"))
    assert sorted(len(p.bindings) for p in plans.values()) == [1, 1]
    assert {p.private_l3 for p in plans.values()} == {PRIV.uuid, PRIV2.uuid}
    assert {p.private_gateway for p in plans.values()} == {ipaddress.IPv4Address("198.18.0.1"), None}


def test_invalid_eips_are_absent_and_the_rest_applies():
    plans = build(
        vm(1, vip="203.0.113.11"),  # kept
        vm(2, NO_EIP, vip="203.0.113.12"),  # its L3 lacks the EIP service
        vm(3, vip="192.0.2.13"),  # VIP outside the public subnet
        vm(4, vip="203.0.113.1"),  # the public gateway
        vm(5, vip="203.0.113.11"),  # second claim on a VIP: the lower NIC uuid (nic-0001) keeps it
        vm(6, vip="203.0.113.16", ip="10.0.0.6"),  # NIC address outside its L3
    )
    (plan,) = plans.values()
    assert [(str(b.vip), b.nic_uuid) for b in plan.bindings] == [("203.0.113.11", "nic-0001")]


def test_unknown_public_l3_or_l2_is_ignored():
    lost = vm(1, vip="203.0.113.11")
    lost.nics[0].eip.public_l3_uuid = "nope"
    assert build(lost) == {}
    assert eip_plan.build({}, L3S, {"v": vm(2, vip="203.0.113.12")}, "hse") == {}


def test_no_eip_no_plan():
    assert build(vm(1), vm(2, NO_EIP)) == {}


def test_an_incoming_vms_eips_are_staged_in_its_pair_and_not_answered():
    """A VM moving live here: its pair is planned whole, its VIP is not held (the switch adds it)."""
    moving = vm(2, vip="203.0.113.12")
    moving.incoming = "migration-1"
    (plan,) = build(vm(1, vip="203.0.113.11"), moving).values()
    assert [(str(b.vip), b.staged) for b in plan.bindings] == [("203.0.113.11", False), ("203.0.113.12", True)]
    assert plan.answered == {ipaddress.IPv4Address("203.0.113.11")}
    (alone,) = build(moving).values()
    assert alone.answered == frozenset() and len(alone.bindings) == 1
    moving.incoming = None  # it is this host's now
    (plan,) = build(vm(1, vip="203.0.113.11"), moving).values()
    assert plan.answered == {b.vip for b in plan.bindings} and not any(b.staged for b in plan.bindings)
