"""The anti-spoofing table's text (its end state in nftables and on a bridge: the functional tests)."""

from __future__ import annotations

import pytest

from flatnet.antispoof import TABLE, body
from flatnet.nft import script

MAC, IP_ = "52:54:00:12:34:56", "198.18.7.10"
SPOOFED = 'counter name "spoofed" drop'  # counted: Antispoof.dropped()


def render(taps: dict[str, tuple[str, str]], **ports) -> str:
    """The whole `nft -f` script `Antispoof.apply` writes."""
    return script("bridge", TABLE, body(taps, **ports))


def test_render_checks_source_mac_and_ip_and_fails_closed_on_garbage():
    text = render({"hst1": (MAC.upper(), IP_), "hst2": ("52:54:00:00:00:02", "not-an-ip")})
    assert text.startswith("table bridge hs_antispoof {}\ndelete table bridge hs_antispoof\n")
    assert f"ether saddr != {MAC} {SPOOFED}" in text
    assert f"arp saddr ip != {{ 0.0.0.0, {IP_} }} {SPOOFED}" in text
    assert f"arp saddr ip 0.0.0.0 arp daddr ip != {IP_} {SPOOFED}" in text  # probes only its own address
    assert f"ip saddr != {IP_} {SPOOFED}" in text
    assert f"udp sport 67 {SPOOFED}" in text  # no DHCP server
    assert f"udp dport 68 {SPOOFED}" in text  # nor its reply from another port
    assert 'ether type != { ip, arp } counter name "protocol" drop' in text  # not spoofing: counted apart
    assert "\tcounter spoofed {}\n\tcounter protocol {}\n" in text
    assert "chain tap_hst2 {\n\t\tcomment \"anti-spoofing for hst2\"\n\t\tdrop\n\t}" in text
    with pytest.raises(ValueError):
        render({"bad name": (MAC, IP_)})


def test_only_whole_ethernet_ipv4_arp_and_ipv4_headers_reach_the_checks_that_read_them():
    chain = render({"hst1": (MAC, IP_)}).split("chain tap_hst1")[1]
    protocol = 'counter name "protocol" drop'
    whole = [f"ether type arp meta length < 28 {protocol}", f"ether type ip meta length < 20 {protocol}",
             f"arp htype . arp ptype . arp hlen . arp plen != {{ 1 . ip . 6 . 4 }} {protocol}"]
    assert all(rule in chain for rule in whole), chain
    assert max(chain.index(rule) for rule in whole) < chain.index("arp saddr ether")


def test_a_dhcp_client_message_must_carry_the_nics_mac_as_chaddr():
    text = render({"hst1": (MAC, IP_)})
    assert f"udp dport 67 @th,72,16 != 0x0106 {SPOOFED}" in text  # Ethernet, 6-byte addresses
    assert f"udp dport 67 @th,288,48 != 0x525400123456 {SPOOFED}" in text
    assert f"udp dport 67 ip frag-off & 0x2000 != 0 {SPOOFED}" in text  # chaddr cannot hide in a second fragment
    chain = text[text.index("chain tap_hst1"):]
    assert chain.index("@th,288,48") < chain.index("udp sport 68 udp dport 67 accept")


def test_gone_taps_drop_everything_and_unknown_ports_are_kept_apart_from_ours():
    text = render({"hst1": (MAC, IP_)}, gone=["hst9", "hst1"], ports=["eth1", "bad name"])
    assert 'iifname vmap { "hst1" : jump tap_hst1, "hst9" : drop }' in text  # a wanted tap is never "gone"
    assert 'elements = { "eth1", "hst1" }' in text  # ours: known taps and uplinks (a bad name is left out)
    assert f'elements = {{ {MAC} . "hst1" }}' in text
    assert f"ether saddr @nic_macs ether saddr . iifname != @nic_ports {SPOOFED}" in text  # a NIC's MAC: its tap
    forward = text[text.index("chain forward"):text.index("chain tap_hst1")]
    assert forward.split("\n")[2:8] == [
        "\t\tiifname @ours jump from_ours", '\t\tiifname { "hsf*", "hsep*", "hsei*" } jump from_ours',
        "\t\toifname @ours drop", '\t\toifname { "hsf*", "hsep*", "hsei*" } drop', "\t}", "\tchain from_ours {"]
    assert forward.rstrip().endswith('oifname { "hsf*", "hsep*", "hsei*" } accept\n\t\tdrop\n\t}')
    with pytest.raises(ValueError):
        render({}, gone=["bad name"])
