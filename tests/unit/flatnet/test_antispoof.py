"""The anti-spoofing table's text (its end state in nftables and on a bridge: the functional tests)."""

from __future__ import annotations

import pytest

from flatnet.antispoof import TABLE, body
from flatnet.nft import script

MAC, IP_ = "52:54:00:12:34:56", "198.18.7.10"


def render(taps: dict[str, tuple[str, str]]) -> str:
    """The whole `nft -f` script `Antispoof.apply` writes."""
    return script("bridge", TABLE, body(taps))


def test_render_checks_source_mac_and_ip_and_fails_closed_on_garbage():
    text = render({"hst1": (MAC.upper(), IP_), "hst2": ("52:54:00:00:00:02", "not-an-ip")})
    assert text.startswith("table bridge hs_antispoof {}\ndelete table bridge hs_antispoof\n")
    assert f"ether saddr != {MAC} drop" in text
    assert f"arp saddr ip != {{ 0.0.0.0, {IP_} }} drop" in text
    assert f"ip saddr != {IP_} drop" in text
    assert "chain tap_hst2 {\n\t\tcomment \"anti-spoofing for hst2\"\n\t\tdrop\n\t}" in text
    with pytest.raises(ValueError):
        render({"bad name": (MAC, IP_)})
