"""Unit tests: the rendered nftables tables and the atomic script around them."""

from __future__ import annotations

import dataclasses
import ipaddress
import random

from flatnet.eip import rules as eip_rules
from flatnet.eip.plan import Binding, PairPlan, pair_key
from flatnet.nft import fingerprint, script

NS_MAC = "02:00:00:00:00:aa"
IP = ipaddress.IPv4Address


def binding(n: int, private: str = "198.18.0.0") -> Binding:
    return Binding(IP(f"203.0.113.{10 + n}"), IP(private) + n, f"52:54:00:00:00:{n:02x}", f"hstnic{n:05d}",
                   f"eip-{n}", f"nic-{n}")


def pair(private_l3: str, bindings: list[Binding], gateway: str | None = "198.18.0.1") -> PairPlan:
    key = pair_key("pub", private_l3)
    return PairPlan(key=key, netns="hse" + key, public_l3="pub", private_l3=private_l3, public_bridge="hsbrpub",
                    private_bridge="hsbrpriv", public_net=ipaddress.IPv4Network("203.0.113.0/24"),
                    public_gateway=IP("203.0.113.1"), public_mtu=1500,
                    private_net=ipaddress.IPv4Network("198.18.0.0/24"),
                    private_gateway=IP(gateway) if gateway else None, private_mtu=1500,
                    bindings=tuple(sorted(bindings)))


def plans(n: int) -> list[PairPlan]:
    return [pair("priv", [binding(i) for i in range(1, n + 1)])]


def test_namespace_rules_do_not_grow_with_eips():
    small, large = eip_rules.namespace_body(plans(1)[0]), eip_rules.namespace_body(plans(200)[0])
    assert len(large) == len(small) + 2 * 199
    rules = [line for line in large if line.startswith("\t\t") and not line.startswith("\t\t\t")]
    assert rules == [line for line in small if line.startswith("\t\t") and not line.startswith("\t\t\t")]
    assert "\t\t\t203.0.113.210 : 198.18.0.200" in large  # DNAT element, last one without a comma
    assert "\t\t\t198.18.0.1 : 203.0.113.11," in large  # SNAT element
    assert "\t\tfib daddr type local dnat to ip daddr map @vip_to_ip" in large  # only VIPs held here
    assert '\t\tiifname "priv" ip saddr @ip_to_vip ct state new accept' in large  # what NAT translates, no more


def test_host_rules_steer_per_private_l3():
    own, other = pair("priv", [binding(1)]), pair("priv2", [binding(2)], gateway=None)  # overlapping CIDRs
    body = eip_rules.host_body([own, other], {own.netns: NS_MAC, other.netns: "02:00:00:00:00:bb"})
    text = "\n".join(body)
    for p in (own, other):
        tag = eip_rules.l3_tag(p.private_l3)
        assert f"ip daddr != 198.18.0.0/24 ether daddr set iifname . ether saddr . ip saddr map @steer_{tag}" in text
    b = own.bindings[0]
    assert f'"{b.tap}" . {b.mac} . {b.private_ip} : {NS_MAC}' in text
    assert f'"{own.host_private_dev}" . "{b.tap}" . {b.mac} . 198.18.0.1' in text  # gateway ARP allowed
    assert f'"{other.host_private_dev}" . "hstnic00002" . 52:54:00:00:00:02 . 198.18.0.1' not in text  # no gateway
    assert f'oifname {{ "{own.host_private_dev}", "{other.host_private_dev}" }} jump to_ns' in text


def test_rendering_is_deterministic():
    ps = plans(30)
    macs = {p.netns: NS_MAC for p in ps}
    shuffled = [binding(i) for i in range(1, 31)]
    random.shuffle(shuffled)
    again = [pair("priv", shuffled)]
    assert eip_rules.host_body(again, macs) == eip_rules.host_body(ps, macs)
    assert eip_rules.namespace_body(again[0]) == eip_rules.namespace_body(ps[0])


def test_a_staged_eip_renders_as_an_answered_one():
    """Both tables are in place while a VM moves live here: its switch writes no table (the VIP address alone)."""
    staged = [dataclasses.replace(b, staged=True) for b in plans(3)[0].bindings]
    moving, settled = pair("priv", staged[:1] + list(plans(3)[0].bindings[1:])), plans(3)[0]
    assert moving.answered != settled.answered
    assert eip_rules.namespace_body(moving) == eip_rules.namespace_body(settled)
    macs = {settled.netns: NS_MAC}
    assert eip_rules.host_body([moving], macs) == eip_rules.host_body([settled], macs)


def test_no_eip_deletes_the_host_table():
    assert eip_rules.host_body([], {}) is None
    assert eip_rules.host_body(plans(1), {}) is None  # namespace not ready: nothing steered to it
    assert script("bridge", "hseip", None) == "table bridge hseip {}\ndelete table bridge hseip\n"


def test_script_replaces_atomically_and_carries_the_fingerprint():
    body = eip_rules.namespace_body(plans(3)[0])
    text = script("ip", "hseip", body).splitlines()
    assert text[:3] == ["table ip hseip {}", "delete table ip hseip", "table ip hseip {"]
    assert text[3] == f'\tcomment "hoststack {fingerprint(body)}"'
    assert fingerprint(body) != fingerprint(eip_rules.namespace_body(plans(4)[0]))
