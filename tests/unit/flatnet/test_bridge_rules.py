"""The host's bridge table as nft text (pure; the kernel side is in tests/functional/flatnet/test_l3ns.py)."""

from __future__ import annotations

from agentkit.model import L2Spec
from flatnet.bridge_rules import PortRules, body, clean
from flatnet.nft import script

VLAN = L2Spec(uuid="vl", name="vlan", physical_interface="eth1", vlan=42)


def render(table: str, ports: list[PortRules], steer_metadata: bool = True, guest_pps: int = 0) -> str:
    """The whole `nft -f` script `BridgeRules.sync` writes."""
    return script("bridge", table, body(ports, steer_metadata, guest_pps))


def test_nothing_to_serve_deletes_the_table():
    assert render("hsflatnet", []) == "table bridge hsflatnet {}\ndelete table bridge hsflatnet\n"


def test_rules_per_uplink_with_vlan_and_steering():
    ports = [PortRules("eth1", "hsfaaaa", "02:00:00:00:00:0a", "198.18.7.2", frozenset({"52:54:00:00:00:01"}),
                       frozenset({"hst01"})),
             PortRules("eth1", "hsfbbbb", "02:00:00:00:00:0b", "198.18.8.2", frozenset()),
             PortRules(VLAN.uplink, "hsfcccc", "02:00:00:00:00:0c", "198.18.9.2", frozenset({"52:54:00:00:00:03"}),
                       frozenset({"hst03"}))]
    text = render("t", ports)
    assert text.startswith("table bridge t {}\ndelete table bridge t\ntable bridge t {\n")
    assert 'iifname { "hsfaaaa", "hsfbbbb" } oifname "eth1" counter drop' in text
    assert 'iifname "eth1" oifname { "hsfaaaa", "hsfbbbb" } counter drop' in text
    assert 'oifname "eth1" ether daddr { 02:00:00:00:00:0a, 02:00:00:00:00:0b } counter drop' in text
    assert 'oifname "eth1" arp daddr ip { 198.18.7.2, 198.18.8.2 } counter drop' in text
    assert 'oifname "eth1" ether saddr { 52:54:00:00:00:01 } udp sport 68 udp dport 67 counter drop' in text
    assert f'oifname "{VLAN.uplink}" ether saddr {{ 52:54:00:00:00:03 }} udp sport 68 udp dport 67' in text
    assert VLAN.uplink == "hsvvl.42"
    assert ('ip daddr 169.254.169.254 ether daddr set iifname map '
            '{ "hst01" : 02:00:00:00:00:0a, "hst03" : 02:00:00:00:00:0c }') in text  # by tap: MACs may repeat
    assert "prerouting" not in render("t", ports, steer_metadata=False)
    assert "guest_pps" not in text


def test_l3s_sharing_a_bridge_only_meet_their_own_taps_and_guests_are_rate_limited():
    a = PortRules("eth1", "hsfaaaa", "02:00:00:00:00:0a", "10.0.0.2", frozenset({"52:54:00:00:00:01"}),
                  frozenset({"hsta1", "hsta2"}), bridge="hsbr1")
    b = PortRules("eth1", "hsfbbbb", "02:00:00:00:00:0b", "10.0.0.2", frozenset({"52:54:00:00:00:01"}),
                  frozenset({"hstb1"}), bridge="hsbr1")
    other_bridge = PortRules("eth2", "hsfcccc", "02:00:00:00:00:0c", "10.0.0.2", frozenset(), frozenset({"hstc1"}),
                             bridge="hsbr2")
    text = render("t", [a, b, other_bridge], guest_pps=1024)
    assert 'oifname "hsfaaaa" iifname { "hstb1" } counter drop' in text
    assert 'iifname "hsfaaaa" oifname { "hstb1" } counter drop' in text
    assert 'oifname "hsfbbbb" iifname { "hsta1", "hsta2" } counter drop' in text
    assert "hstc1\" } counter drop" not in text and 'oifname "hsfcccc" iifname' not in text
    assert ('oifname { "hsfaaaa", "hsfbbbb", "hsfcccc" } update @guest_pps { iifname limit rate over 1024/second '
            'burst 1024 packets } counter name "guest_pps_dropped" drop') in text
    assert "\tcounter guest_pps_dropped {}" in text


def test_bad_items_are_left_out_and_named():
    good = PortRules("eth1", "hsfaaaa", "02:00:00:00:00:0a", "10.0.0.2", frozenset({"52:54:00:00:00:01", "bad"}),
                     frozenset({"hst1", 'x" drop'}), bridge="hsbr1", l3_uuid="a")
    dup = PortRules("eth1", "hsfbbbb", "02:00:00:00:00:0b", "10.0.0.3", frozenset(), frozenset({"hst1", "hst2"}),
                    bridge="hsbr1", l3_uuid="b")
    broken = PortRules("eth1", "hsf cccc", "02:00:00:00:00:0c", "10.0.0.4", frozenset(), frozenset(), l3_uuid="c")
    ports, problems = clean([good, dup, broken])
    assert [(p.port, p.vm_macs, p.vm_taps) for p in ports] == [
        ("hsfaaaa", frozenset({"52:54:00:00:00:01"}), frozenset()), ("hsfbbbb", frozenset(), frozenset({"hst2"}))]
    assert len(problems) == 4 and any("'hst1'" in p for p in problems) and any("'hsf cccc'" in p for p in problems)
