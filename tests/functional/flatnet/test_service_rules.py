"""What the service plans from desired state and the nft text it renders (pure; the kernel side is in
test_namespaces.py and test_service.py)."""

from __future__ import annotations

from agentkit.model import DnsRecord, L2Spec, L3Spec, NicSpec, VmSpec
from flatnet.bridge_rules import PortRules, render
from flatnet.plan import plan

L2 = L2Spec(uuid="l2", name="phys", physical_interface="eth1")
VLAN = L2Spec(uuid="vl", name="vlan", physical_interface="eth1", vlan=42)


def l3(uuid: str, l2: str = "l2", **kw) -> L3Spec:
    base = {"cidr": "198.18.7.0/24", "services": ["DHCP"], "dhcp_address": "198.18.7.2"}
    return L3Spec(uuid=uuid, name=uuid, l2_uuid=l2, **{**base, **kw})


def vm(uuid: str, *l3s: str) -> VmSpec:
    nics = [NicSpec(uuid=f"{uuid}-{i}", l3_uuid=u, mac=f"52:54:00:00:{len(uuid):02x}:{i:02x}",
                    ip=f"198.18.7.{10 + i}", default=i == 0) for i, u in enumerate(l3s)]
    return VmSpec(uuid=uuid, name=uuid, nics=nics)


def test_plan_serves_only_usable_l3s_with_local_nics():
    l3s = {f"l3/{x.uuid}": x for x in (
        l3("ok"), l3("no-dhcp", services=["DNS"]), l3("no-address", dhcp_address=None),
        l3("outside", dhcp_address="10.0.0.2"), l3("no-l2", l2="missing"), l3("no-vms"))}
    vms = {"vm/a": vm("a", "ok", "no-dhcp", "no-address"), "vm/b": vm("b", "outside", "no-l2")}
    dns = {"dns/ok/1": DnsRecord(l3_uuid="ok", name="far", ip="198.18.7.99"),
           "dns/x/1": DnsRecord(l3_uuid="x", name="x", ip="1.2.3.4")}
    served = plan({"l2/l2": L2}, l3s, vms, dns)
    assert list(served) == ["ok"]
    s = served["ok"]
    assert [nic.uuid for _, nic in s.nics] == ["a-0"]
    assert [r.name for r in s.records] == ["far"]
    assert s.addresses == frozenset({("198.18.7.2", 24), ("169.254.169.254", 32)})
    assert s.neighbours == {"198.18.7.10": "52:54:00:00:01:00"}


def test_nothing_to_serve_deletes_the_table():
    assert render("hsflatnet", []) == "table bridge hsflatnet {}\ndelete table bridge hsflatnet\n"


def test_rules_per_uplink_with_vlan_and_steering():
    ports = [PortRules("eth1", "hsfaaaa", "02:00:00:00:00:0a", "198.18.7.2", frozenset({"52:54:00:00:00:01"})),
             PortRules("eth1", "hsfbbbb", "02:00:00:00:00:0b", "198.18.8.2", frozenset()),
             PortRules(VLAN.uplink, "hsfcccc", "02:00:00:00:00:0c", "198.18.9.2", frozenset({"52:54:00:00:00:03"}))]
    text = render("t", ports)
    assert text.startswith("table bridge t {}\ndelete table bridge t\ntable bridge t {\n")
    assert 'iifname { "hsfaaaa", "hsfbbbb" } oifname "eth1" counter drop' in text
    assert 'iifname "eth1" oifname { "hsfaaaa", "hsfbbbb" } counter drop' in text
    assert 'oifname "eth1" ether daddr { 02:00:00:00:00:0a, 02:00:00:00:00:0b } counter drop' in text
    assert 'oifname "eth1" arp daddr ip { 198.18.7.2, 198.18.8.2 } counter drop' in text
    assert 'oifname "eth1" ether saddr { 52:54:00:00:00:01 } udp sport 68 udp dport 67 counter drop' in text
    assert f'oifname "{VLAN.uplink}" ether saddr {{ 52:54:00:00:00:03 }} udp sport 68 udp dport 67' in text
    assert VLAN.uplink == "hsvvl.42"
    assert ("ip daddr 169.254.169.254 ether daddr set ether saddr map "
            "{ 52:54:00:00:00:01 : 02:00:00:00:00:0a, 52:54:00:00:00:03 : 02:00:00:00:00:0c }") in text
    assert "prerouting" not in render("t", ports, steer_metadata=False)
