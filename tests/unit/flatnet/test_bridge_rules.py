"""The host's bridge table as nft text (pure; the kernel side is in tests/functional/flatnet/test_l3ns.py)."""

from __future__ import annotations

from agentkit.model import L2Spec
from flatnet.bridge_rules import PortRules, body
from flatnet.nft import script

VLAN = L2Spec(uuid="vl", name="vlan", physical_interface="eth1", vlan=42)


def render(table: str, ports: list[PortRules], steer_metadata: bool = True) -> str:
    """The whole `nft -f` script `BridgeRules.sync` writes."""
    return script("bridge", table, body(ports, steer_metadata))


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
